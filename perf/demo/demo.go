// Package demo is `make demo`: three emulated hosts with overlayd, traffic
// between their containers, and a short report.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/traffic"
)

// Options of a demo run.
type Options struct {
	Overlayd      string // the overlayd binary
	Hosts         int
	TransferBytes int64
	KeepWorkDir   bool     // keep the logs (and Up's etcd data) after the run
	NetworkConfig string   // Up only; default: cluster.DefaultNetworkConfig
	DaemonArgs    []string // Up only: extra overlayd flags
}

// Run builds the cluster, shows the overlay working and removes everything
// it made, also when ctx is cancelled (Ctrl-C) or a step fails.
func Run(ctx context.Context, opts Options, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo creates network namespaces and needs root: run it as root (sudo make demo)")
	}
	if err := (cluster.Options{Hosts: opts.Hosts, Overlayd: opts.Overlayd}).Check(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "overlayd-demo-")
	if err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	// The logs stay where an error message points to them: after a
	// failure, or with KeepWorkDir. Ctrl-C and success remove them.
	defer func() {
		switch {
		case opts.KeepWorkDir:
			say("== logs kept in %s", work)
		case err != nil && ctx.Err() == nil:
			say("== logs kept in %s (remove it when done)", work)
		default:
			os.RemoveAll(work)
		}
	}()

	say("== overlayd demo: %d emulated hosts on underlay 198.18.0.0/24, overlay 100.96.0.0/16 (udp backend, port 8285)", opts.Hosts)
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		Prefix:   netns.Prefix("demo"),
		Hosts:    opts.Hosts,
		Overlayd: opts.Overlayd,
		WorkDir:  work,
		Logf:     func(f string, a ...any) { say("   "+f, a...) },
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted during bring-up; everything it made is removed")
		}
		return fmt.Errorf("bring-up: %w (logs in %s)", err, work)
	}
	defer func() {
		cerr := c.Close()
		if cerr != nil {
			say("cleanup: %v", cerr)
		} else {
			say("== cleaned up: namespaces deleted, processes stopped")
		}
		if err == nil {
			err = cerr
		}
	}()
	say("== cluster up in %s", time.Since(start).Round(time.Millisecond))

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tUNDERLAY\tFLANNEL_SUBNET (docker0)\tFLANNEL_MTU\tCONTAINER")
	for _, d := range c.Daemons {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", d.Name(), d.Host.Underlay.Addr(), d.Env.Subnet, d.Env.MTU, d.Container.Addr.Addr())
	}
	tw.Flush()

	for _, d := range c.Daemons {
		if err := d.WaitPeers(ctx, 10*time.Second, d.OtherSubnets()); err != nil {
			return fmt.Errorf("%s peers: %w", d.Name(), err)
		}
	}

	say("== container-to-container ping (across hosts, through overlayd)")
	failed := 0
	for _, a := range c.Daemons {
		for _, b := range c.Daemons {
			if a == b {
				continue
			}
			dst := b.Container.Addr.Addr()
			res, err := traffic.Ping(ctx, a.Container.NS, dst, 84, false, 2*time.Second)
			switch {
			case err != nil:
				failed++
				say("   %s -> %s (%s): error %v", a.Name(), b.Name(), dst, err)
			case !res.Reply:
				failed++
				say("   %s -> %s (%s): no reply", a.Name(), b.Name(), dst)
			default:
				say("   %s -> %s (%s): reply in %s", a.Name(), b.Name(), dst, res.RTT.Round(time.Microsecond))
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d pings failed (logs in %s)", failed, work)
	}

	src, dst := c.Daemons[0], c.Daemons[len(c.Daemons)-1]
	say("== TCP transfer of %d MiB, container on %s -> container on %s", opts.TransferBytes>>20, src.Name(), dst.Name())
	tr, err := traffic.Transfer(ctx, src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 5201, opts.TransferBytes)
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	if !tr.Identical {
		return fmt.Errorf("transfer: %d bytes arrived but differ from what was sent", tr.Bytes)
	}
	gbps := float64(tr.Bytes*8) / tr.Duration.Seconds() / 1e9
	say("   %d bytes in %s (%.2f Gbit/s), sha256 identical on both ends", tr.Bytes, tr.Duration.Round(time.Millisecond), gbps)

	say("== overlayd counters")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tPEERS\tTX PKTS\tRX PKTS\tTX BYTES\tRX BYTES\tDROPS")
	for _, d := range c.Daemons {
		s, err := d.Status(ctx)
		if err != nil {
			return err
		}
		var drops uint64
		for _, n := range s.Stats.Drops {
			drops += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", d.Name(), len(s.Peers), s.Stats.TxPackets, s.Stats.RxPackets, s.Stats.TxBytes, s.Stats.RxBytes, drops)
	}
	tw.Flush()
	say("== demo passed: every container pair reachable, transfer intact")
	return nil
}

// Up brings up the cluster, prints where everything is, and keeps it until
// ctx is done: a lab to run iperf3, tcpdump or pprof against by hand. Then
// it removes everything, its work directory too (unless KeepWorkDir).
func Up(ctx context.Context, opts Options, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab creates network namespaces and needs root")
	}
	if err := (cluster.Options{Hosts: opts.Hosts, Overlayd: opts.Overlayd, NetworkConfig: opts.NetworkConfig}).Check(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "overlayd-lab-")
	if err != nil {
		return err
	}
	defer func() {
		if opts.KeepWorkDir {
			fmt.Fprintf(out, "work directory kept: %s\n", work)
			return
		}
		os.RemoveAll(work)
		fmt.Fprintf(out, "removed %s\n", work)
	}()
	c, err := cluster.Start(ctx, cluster.Options{
		Prefix: netns.Prefix("lab"), Hosts: opts.Hosts, Overlayd: opts.Overlayd, WorkDir: work,
		NetworkConfig: opts.NetworkConfig, DaemonArgs: opts.DaemonArgs,
	})
	if err != nil {
		if ctx.Err() == nil {
			opts.KeepWorkDir = true // the logs say why
		}
		return fmt.Errorf("bring-up: %w (logs in %s)", err, work)
	}
	defer func() {
		if cerr := c.Close(); cerr != nil {
			fmt.Fprintf(out, "cleanup: %v\n", cerr)
		} else {
			fmt.Fprintln(out, "lab down: processes stopped, namespaces deleted")
		}
	}()
	lab := labInfo{
		work: work, overlayd: opts.Overlayd, pid: os.Getpid(),
		etcdPid: c.EtcdPid(), etcd: c.EtcdEndpoint(), etcdNS: c.Topo.Switch.Name,
	}
	for _, d := range c.Daemons {
		lab.hosts = append(lab.hosts, labHost{
			name: d.Name(), ns: d.Host.NS.Name, containerNS: d.Container.NS.Name,
			container: d.Container.Addr.Addr().String(), pid: d.Proc.Pid(), socket: d.ControlSocket,
		})
	}
	lab.write(out)
	<-ctx.Done()
	return nil
}

// labInfo is what Up prints: where everything runs, and commands to try
// that can be pasted as they are.
type labInfo struct {
	work     string // the work directory
	overlayd string // the overlayd binary the lab runs
	pid      int    // overlayd-lab's own
	etcdPid  int
	etcd     string // etcd's client URL
	etcdNS   string // the namespace etcd runs in
	hosts    []labHost
}

type labHost struct {
	name, ns, containerNS, container string
	pid                              int
	socket                           string
}

func (l labInfo) write(out io.Writer) {
	bin := l.overlayd
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	fmt.Fprintf(out, "lab up; logs, subnet files, control sockets and etcd data in %s\n", l.work)
	fmt.Fprintf(out, "etcd (pid %d) listens at %s inside netns %s, reachable from the host namespaces\n", l.etcdPid, l.etcd, l.etcdNS)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tHOST NETNS\tCONTAINER NETNS\tCONTAINER\tOVERLAYD PID\tCONTROL SOCKET")
	for _, h := range l.hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", h.name, h.ns, h.containerNS, h.container, h.pid, h.socket)
	}
	tw.Flush()
	if len(l.hosts) >= 2 {
		a, b := l.hosts[0], l.hosts[1]
		fmt.Fprintln(out, "Try:")
		fmt.Fprintf(out, "  ip netns exec %s ping -c 3 %s\n", a.containerNS, b.container)
		fmt.Fprintf(out, "  %s status --control-socket %s\n", bin, a.socket)
		fmt.Fprintf(out, "  ip netns exec %s %s leases --etcd-endpoints %s\n", a.ns, bin, l.etcd)
		fmt.Fprintf(out, "  curl --unix-socket %s 'http://x/debug/pprof/profile?seconds=10' > cpu.pprof\n", a.socket)
	}
	fmt.Fprintf(out, "To stop: Ctrl-C here, or kill %d (overlayd-lab): stops every process above, deletes the namespaces and %s.\n", l.pid, l.work)
}
