package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Config is what the daemon needs to run; cmd/overlayd fills it from flags
// and FLANNELD_* environment variables.
type Config struct {
	Iface    string // interface name or IPv4 address; empty: the default route's
	PublicIP string // written into the lease; empty: the interface's address

	SubnetFile  string
	RenewMargin time.Duration
	LeaseTTL    time.Duration

	HealthzIP   string
	HealthzPort int // 0: no health server

	TunName       string
	Queues        int
	ControlSocket string // status socket: a path, or @name for an abstract socket (per network namespace); empty: none
	ReleaseOnExit bool   // delete our lease on a clean exit (flanneld keeps it)

	// FirewallResync is how often Deps.Firewall's rules are checked and
	// put back (--iptables-resync); 0: DefaultFirewallResync.
	FirewallResync time.Duration

	// VXLANDataplane is the vxlan backend's data plane: DataplaneUserspace
	// (overlayd forwards; also when empty) or DataplaneKernel (overlayd
	// programs flannel.<VNI>).
	VXLANDataplane string

	// UnderlayKind is the underlay (underlay.Conn) the userspace data
	// path reaches the other hosts with (--underlay): UnderlaySocket (a
	// UDP socket; also when empty) or UnderlayAFPacket (AF_PACKET with
	// TPACKET_V2 rings, see package afpacket).
	UnderlayKind string

	// Steering is how a packet from the local containers picks its TUN
	// queue and worker (--steering): SteeringFlow (the kernel's hash of
	// its flow; also when empty) or SteeringCPU (the queue of the CPU
	// that sent it, whose worker runs pinned to that CPU).
	Steering string

	// IdlePoll is how long after the last packet (once to twice that)
	// every CPU of the host is kept polling in idle rather than halting
	// (--idle-poll, package idlepoll), with Deps.IdleRequest; 0: never.
	IdlePoll time.Duration

	// BusyPoll is the most a forwarding thread that finds its TUN queue,
	// UDP socket or AF_PACKET ring empty polls it, yielding the CPU
	// between polls, before it sleeps (--busy-poll, package busypoll); the
	// window adapts to the traffic. 0: sleep at once.
	BusyPoll time.Duration

	// CompleteChecksums makes this host one that needs complete TCP and
	// UDP checksums, as a flanneld host does: it advertises no
	// PartialChecksums in its lease, completes every checksum it sends,
	// and checks every one it receives before its kernel trusts the
	// packet (tun.WithChecksumVerify). For tests and captures
	// (--partial-checksums=false); it costs a pass over every payload
	// byte each way.
	CompleteChecksums bool

	Version string // this build's, for overlayd_build_info
	Logger  *slog.Logger
}

// MinIdlePoll is the shortest --idle-poll: each quiet period ends with a
// release, and each new burst of packets takes the request again and wakes
// every idle CPU.
const MinIdlePoll = 10 * time.Millisecond

// DefaultBusyPoll is --busy-poll's default: about the round trip of a
// small request through two overlayd hosts on a 2-core VM, where polling
// pays (doc/DESIGN-NOTES.md, "Busy-polling before sleeping").
const DefaultBusyPoll = 50 * time.Microsecond

// MaxBusyPoll bounds --busy-poll: a thread that polls longer than a
// scheduler tick gains nothing a sleep would not give.
const MaxBusyPoll = time.Millisecond

// DefaultFirewallResync is flanneld's --iptables-resync default.
const DefaultFirewallResync = 5 * time.Second

// The underlays of Config.UnderlayKind.
const (
	UnderlaySocket   = "socket"
	UnderlayAFPacket = "afpacket"
)

// The steerings of Config.Steering.
const (
	SteeringFlow = "flow"
	SteeringCPU  = "cpu"
)

// Validate checks the fields that do not need the system, naming the flag
// and the fix.
func (c *Config) Validate() error {
	var errs []error
	if c.PublicIP != "" {
		if a, err := netip.ParseAddr(c.PublicIP); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("--public-ip %q: not an IPv4 address", c.PublicIP))
		}
	}
	if c.SubnetFile == "" {
		errs = append(errs, errors.New("--subnet-file: empty; the default is /run/flannel/subnet.env"))
	}
	if m := c.RenewMargin; m < time.Minute || m > 1439*time.Minute {
		errs = append(errs, fmt.Errorf("--subnet-lease-renew-margin %d: must be between 1 and 1439 minutes", int(m/time.Minute)))
	}
	if c.HealthzPort < 0 || c.HealthzPort > 65535 {
		errs = append(errs, fmt.Errorf("--healthz-port %d: must be 0 (off) to 65535", c.HealthzPort))
	}
	if c.HealthzPort != 0 {
		if _, err := netip.ParseAddr(c.HealthzIP); err != nil {
			errs = append(errs, fmt.Errorf("--healthz-ip %q: not an IP address", c.HealthzIP))
		}
	}
	if !validDeviceName(c.TunName) {
		errs = append(errs, fmt.Errorf("--tun-name %q: must be 1 to 15 letters, digits, '.', '-' or '_' (an interface name)", c.TunName))
	}
	if c.Queues < 1 || c.Queues > 256 {
		errs = append(errs, fmt.Errorf("--queues %d: must be between 1 and 256 (or 0, overlayd run's default: one per CPU)", c.Queues))
	}
	if c.FirewallResync < 0 {
		errs = append(errs, fmt.Errorf("--iptables-resync %d: must be at least 1 second", int(c.FirewallResync/time.Second)))
	}
	switch c.VXLANDataplane {
	case "", DataplaneUserspace, DataplaneKernel:
	default:
		errs = append(errs, fmt.Errorf("--vxlan-dataplane %q: use %q or %q", c.VXLANDataplane, DataplaneUserspace, DataplaneKernel))
	}
	switch c.UnderlayKind {
	case "", UnderlaySocket, UnderlayAFPacket:
	default:
		errs = append(errs, fmt.Errorf("--underlay %q: use %q or %q", c.UnderlayKind, UnderlaySocket, UnderlayAFPacket))
	}
	switch c.Steering {
	case "", SteeringFlow, SteeringCPU:
	default:
		errs = append(errs, fmt.Errorf("--steering %q: use %q or %q", c.Steering, SteeringFlow, SteeringCPU))
	}
	if c.IdlePoll < 0 || (c.IdlePoll > 0 && c.IdlePoll < MinIdlePoll) {
		errs = append(errs, fmt.Errorf("--idle-poll %s: must be 0 (off) or at least %s, such as 1s", c.IdlePoll, MinIdlePoll))
	}
	if c.BusyPoll < 0 || c.BusyPoll > MaxBusyPoll {
		errs = append(errs, fmt.Errorf("--busy-poll %s: must be 0 (off) to %s, such as %s", c.BusyPoll, MaxBusyPoll, DefaultBusyPoll))
	}
	return errors.Join(errs...)
}

// validDeviceName: an interface name the kernel takes as it is (no "%d"
// template) and iptables matches exactly ("+" would be a wildcard in
// -i) and prints unquoted.
func validDeviceName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return false
		}
	}
	return true
}
