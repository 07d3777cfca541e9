package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/overlayd/overlayd/tunnel/busypoll"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// Status is what `overlayd status` shows: this host's lease, its peers and
// the forwarder's counters.
type Status struct {
	Ready    bool          `json:"ready"`
	Backend  string        `json:"backend"`
	Network  string        `json:"network"`
	Subnet   string        `json:"subnet"`
	PublicIP string        `json:"public_ip"`
	Iface    string        `json:"iface"`
	TUN      string        `json:"tun"`
	MTU      int           `json:"mtu"`
	Port     int           `json:"port"`
	Queues   int           `json:"queues"`
	Peers    []PeerStatus  `json:"peers"`
	Stats    StatsSnapshot `json:"stats"`
	// Underlay holds the underlay's own counters (underlay.Counters),
	// summed over the workers: datagrams sent and received, GSO turned
	// off, and with --underlay=afpacket what its ring dropped.
	Underlay map[string]uint64 `json:"underlay,omitempty"`
	// UnderlayQueues holds the same counters per worker, in queue order:
	// how the flows spread over the workers' sockets.
	UnderlayQueues []map[string]uint64 `json:"underlay_queues,omitempty"`

	// PartialChecksums: our lease says we take partial checksums.
	PartialChecksums bool `json:"partial_checksums"`

	// IdlePoll is the state of --idle-poll; nil when it is off or the
	// kernel forwards.
	IdlePoll *IdlePollStatus `json:"idle_poll,omitempty"`

	// BusyPoll is what --busy-poll did, summed over the TUN queues and
	// underlay sockets; nil when it is off or the kernel forwards.
	BusyPoll *BusyPollStatus `json:"busy_poll,omitempty"`
}

// BusyPollStatus says how long the forwarding threads may poll, how many
// reads found a packet by polling, and how many slept in the kernel.
type BusyPollStatus struct {
	Max    string `json:"max"`
	Caught uint64 `json:"caught"`
	Slept  uint64 `json:"slept"`

	// Readers splits the counts by reader, in worker order: in a
	// request/response one thread that keeps sleeping while the others
	// catch is where the round trip waits.
	Readers []BusyPollReader `json:"readers"`
}

// BusyPollReader is one reader's share of BusyPollStatus: worker Worker's
// TUN queue (Reads "tun") or underlay socket (Reads "underlay").
type BusyPollReader struct {
	Worker int    `json:"worker"`
	Reads  string `json:"reads"`
	Caught uint64 `json:"caught"`
	Slept  uint64 `json:"slept"`
}

// IdlePollStatus says whether idle CPUs are kept polling now, how often
// packets started flowing and made them so, and why they cannot be.
type IdlePollStatus struct {
	Held  bool   `json:"held"`
	Holds uint64 `json:"holds"`
	Error string `json:"error,omitempty"`
}

// PeerStatus is one row of the peer table.
type PeerStatus struct {
	Subnet   string `json:"subnet"`
	Underlay string `json:"underlay"`
	Backend  string `json:"backend"`

	// PartialChecksums: we leave the checksums of what we send it partial.
	PartialChecksums bool `json:"partial_checksums"`
}

func (e *Engine) status() Status {
	s := Status{
		Ready:    e.ready.Load(),
		Backend:  e.backend.Type(),
		Network:  e.network.Network.String(),
		Subnet:   e.lease.Subnet.String(),
		PublicIP: e.publicIP.String(),
		Iface:    e.extIface.Name,
		TUN:      e.cfg.TunName,
		MTU:      e.tunMTU,
		Port:     e.backend.Port(),
		Queues:   e.cfg.Queues,
		Peers:    []PeerStatus{},
		Stats:    e.stats.Snapshot(),

		PartialChecksums: e.partialChecksums,
	}
	if e.idle != nil {
		s.IdlePoll = &IdlePollStatus{Held: e.idle.Held(), Holds: e.idle.Holds()}
		if err := e.idle.Err(); err != nil {
			s.IdlePoll.Error = err.Error()
		}
	}
	s.BusyPoll = e.busyPollStatus()
	s.Underlay = underlayCounters(e.conns)
	if len(e.conns) > 1 {
		for _, c := range e.conns {
			if cc, ok := c.(underlay.Counting); ok {
				s.UnderlayQueues = append(s.UnderlayQueues, cc.Counters())
			}
		}
	}
	for _, p := range e.peers.Load().Peers() {
		bt := p.Lease.Attrs.BackendType
		if bt == "" {
			bt = "udp"
		}
		s.Peers = append(s.Peers, PeerStatus{Subnet: p.Subnet.String(), Underlay: p.Underlay.String(), Backend: bt,
			PartialChecksums: p.PartialChecksums})
	}
	return s
}

// underlayCounters sums the workers' underlay counters (underlay.Counting);
// nil if no Conn keeps any.
func underlayCounters(conns []underlay.Conn) map[string]uint64 {
	var sum underlay.Counters
	for _, c := range conns {
		if cc, ok := c.(underlay.Counting); ok {
			if sum == nil {
				sum = underlay.Counters{}
			}
			sum.Add(cc.Counters())
		}
	}
	return sum
}

// handler serves /status (JSON), /metrics (Prometheus), /healthz and
// /readyz (flanneld's semantics: 200 once the subnet file is written); with
// debug, also /debug/pprof/ (the control socket only: it is root's).
func (e *Engine) handler(debug bool) http.Handler {
	mux := http.NewServeMux()
	if debug {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(e.status())
	})
	mux.Handle("GET /metrics", metricsHandler(e.metricsView))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !e.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

type servers []*http.Server

func (s servers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range s {
		srv.Shutdown(ctx)
	}
}

// startServers opens the control socket and the health port, if asked.
func (e *Engine) startServers() (servers, error) {
	var out servers
	if path := e.cfg.ControlSocket; path != "" {
		ln, err := listenControl(path)
		if err != nil {
			return out, fmt.Errorf("--control-socket %s: %w", path, err)
		}
		srv := &http.Server{Handler: e.handler(true), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		out = append(out, srv)
	}
	if e.cfg.HealthzPort != 0 {
		addr := net.JoinHostPort(e.cfg.HealthzIP, strconv.Itoa(e.cfg.HealthzPort))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return out, fmt.Errorf("--healthz-ip/--healthz-port %s: %w", addr, err)
		}
		srv := &http.Server{Handler: e.handler(false), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		out = append(out, srv)
	}
	return out, nil
}

// QueryStatus asks a running overlayd for its status over its control socket.
func QueryStatus(ctx context.Context, socket string) (Status, error) {
	var d net.Dialer
	return QueryStatusDial(ctx, socket, d.DialContext)
}

// QueryStatusDial is QueryStatus with the socket dialled by dial, e.g. from
// inside another network namespace, where an abstract socket lives.
func QueryStatusDial(ctx context.Context, socket string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (Status, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://overlayd/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The HTTP client's wrapping (Get "http://overlayd/status": dial
		// unix <socket>: ...) repeats the socket and names a URL nobody
		// typed: keep what the connect said.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			if opErr, ok := urlErr.Err.(*net.OpError); ok && opErr.Err != nil {
				err = opErr.Err
			}
		}
		return Status{}, fmt.Errorf("control socket %s: %w: %s", socket, err, notRunningHint(socket))
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("control socket %s: decode status: %w", socket, err)
	}
	return s, nil
}

// notRunningHint says what to check when nothing answers on socket.
func notRunningHint(socket string) string {
	if strings.HasPrefix(socket, "@") {
		return "no overlayd with this control socket runs in this network namespace " +
			"(each namespace has its own: run status inside the daemon's, e.g. ip netns exec <ns> overlayd status; " +
			"give --tun-name, or --control-socket, as the daemon was given them)"
	}
	if fi, err := os.Stat(socket); err == nil && fi.Mode()&fs.ModeSocket == 0 {
		return "it is not a socket: give --control-socket as the daemon was given it"
	}
	return "is overlayd running? give --control-socket as the daemon was given it"
}

// PeerSubnets lists the peer subnets of s, for tests and tools.
func (s Status) PeerSubnets() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s.Peers))
	for _, p := range s.Peers {
		if pfx, err := netip.ParsePrefix(p.Subnet); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// busyPollStatus sums the busy-poll windows of the TUN queues and underlay
// sockets; nil with --busy-poll=0 or without a userspace data path.
func (e *Engine) busyPollStatus() *BusyPollStatus {
	if e.cfg.BusyPoll <= 0 || len(e.workers) == 0 {
		return nil
	}
	return busyPollStatus(e.cfg.BusyPoll, e.workers)
}

// busyPollStatus reads each worker's readers that poll, and sums them.
func busyPollStatus(window time.Duration, workers []*worker) *BusyPollStatus {
	st := &BusyPollStatus{Max: window.String(), Readers: make([]BusyPollReader, 0, 2*len(workers))}
	var sum busypoll.Stats
	for _, w := range workers {
		for _, r := range [...]struct {
			reads string
			dev   any
		}{{"tun", w.tun}, {"underlay", w.conn}} {
			rep, ok := r.dev.(busypoll.Reporter)
			if !ok {
				continue
			}
			s := rep.BusyPollStats()
			sum.Add(s)
			st.Readers = append(st.Readers, BusyPollReader{Worker: w.id, Reads: r.reads, Caught: s.Caught, Slept: s.Slept})
		}
	}
	st.Caught, st.Slept = sum.Caught, sum.Slept
	return st
}
