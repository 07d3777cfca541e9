package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/traffic"
)

// rrPort is the request/response server's port, TCP and UDP.
const rrPort = 5301

// rrRun is one request/response test between a testbed's containers, with
// `overlayd-lab rr` at both ends, each a process in its container's
// namespace, as iperf3 is.
type rrRun struct {
	lab      string // the overlayd-lab binary
	tb       Testbed
	proto    string // "tcp" or "udp"
	duration time.Duration
	logs     string // file name prefix for the server log and client output
}

// run starts a fresh server, runs the client to the end and returns its
// result with the CPU time used meanwhile. The client itself waits for the
// server to answer before it starts the clock.
func (r rrRun) run(ctx context.Context) (traffic.RRResult, cpuUsage, error) {
	client, server := r.tb.Endpoints()
	addr := netip.AddrPortFrom(server.Addr.Addr(), rrPort).String()
	srv, err := cluster.StartProcess(ctx, server.NS, r.logs+"-server.log", r.lab, "rr", "server", "--listen", addr)
	if err != nil {
		return traffic.RRResult{}, cpuUsage{}, fmt.Errorf("start rr server: %w", err)
	}
	defer srv.Stop()

	before, err := takeSnapshot(r.tb, true)
	if err != nil {
		return traffic.RRResult{}, cpuUsage{}, err
	}
	argv := []string{r.lab, "rr", "client", "--server", addr, "--proto", r.proto,
		"--size", fmt.Sprint(rrSize), "--duration", r.duration.String()}
	out, err := runToEnd(ctx, client.NS, r.logs+"-client.json", argv, r.duration+clientGrace)
	if err != nil {
		return traffic.RRResult{}, cpuUsage{}, fmt.Errorf("rr client: %w", err)
	}
	after, err := takeSnapshot(r.tb, true)
	if err != nil { // e.g. overlayd died during the test
		return traffic.RRResult{}, cpuUsage{}, err
	}
	var res traffic.RRResult
	if err := json.Unmarshal(out, &res); err != nil {
		if srv.Exited() {
			return res, cpuUsage{}, fmt.Errorf("rr: %s (server exited: %s)", clip(out, 300), clip([]byte(srv.Tail(300)), 300))
		}
		return res, cpuUsage{}, fmt.Errorf("rr: %s", clip(out, 300))
	}
	if res.Transactions == 0 {
		return res, cpuUsage{}, fmt.Errorf("rr %s: no transaction answered in %.1fs (%d timed out)", r.proto, res.Seconds, res.Timeouts)
	}
	return res, after.since(before), nil
}

// runToEnd runs argv inside ns with its output in outPath, waits for it to
// exit (stopping it if ctx ends or it takes longer than limit) and returns
// the output.
func runToEnd(ctx context.Context, ns *netns.NS, outPath string, argv []string, limit time.Duration) ([]byte, error) {
	p, err := cluster.StartProcess(ctx, ns, outPath, argv...)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	case <-t.C:
		p.Stop()
		return nil, fmt.Errorf("%s did not finish within %s; stopped (output in %s)", filepath.Base(argv[0]), limit, filepath.Base(outPath))
	}
	return os.ReadFile(outPath)
}

// pingRun is the ping series from the client's container to the server's,
// from this process (traffic.PingRTT enters the namespace itself).
func pingRun(ctx context.Context, tb Testbed) (traffic.PingStats, cpuUsage, error) {
	client, server := tb.Endpoints()
	before, err := takeSnapshot(tb, true)
	if err != nil {
		return traffic.PingStats{}, cpuUsage{}, err
	}
	st, err := traffic.PingRTT(ctx, client.NS, server.Addr.Addr(), pingSize, pingCount, pingInterval, pingTimeout)
	if err != nil {
		return st, cpuUsage{}, err
	}
	after, err := takeSnapshot(tb, true)
	if err != nil {
		return st, cpuUsage{}, err
	}
	if st.Received == 0 {
		return st, cpuUsage{}, fmt.Errorf("ping: none of %d echoes answered", st.Sent)
	}
	return st, after.since(before), nil
}

// latencyOf converts the tools' results to the bench's.
func latencyOf(rtt traffic.LatencyStats, lost int64, tps float64) *LatencyResult {
	return &LatencyResult{
		Transactions: rtt.Count,
		Lost:         lost,
		TPS:          tps,
		MeanUS:       rtt.MeanUS,
		MinUS:        rtt.MinUS,
		P50US:        rtt.P50US,
		P99US:        rtt.P99US,
		MaxUS:        rtt.MaxUS,
	}
}
