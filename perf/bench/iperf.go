package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/subnet/backoff"
)

const (
	iperfPort = 5201
	// connectAttempts bounds the client's retries while a fresh server
	// starts listening.
	connectAttempts = 8
	// clientGrace is how long a client may take beyond the test duration
	// (connecting, exchanging results) before it is stopped as hung.
	clientGrace = 30 * time.Second
)

// ensureIperf3 finds iperf3, installing the Debian package when it is
// missing. apt-get runs with TMPDIR=/var/tmp (other users of this machine's
// /tmp have broken installs before), and once more after an update if the
// first attempt fails.
func ensureIperf3(ctx context.Context, say func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("iperf3"); err == nil {
		return p, nil
	}
	say("iperf3 not found: installing it with apt-get")
	if err := aptGet(ctx, "install", "-y", "iperf3"); err != nil {
		say("apt-get install failed (%v): updating the package lists and retrying", err)
		if err := aptGet(ctx, "update"); err != nil {
			return "", err
		}
		if err := aptGet(ctx, "install", "-y", "iperf3"); err != nil {
			return "", err
		}
	}
	p, err := exec.LookPath("iperf3")
	if err != nil {
		return "", fmt.Errorf("iperf3 still missing after apt-get install: %w", err)
	}
	return p, nil
}

func aptGet(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "TMPDIR=/var/tmp", "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, clip(out, 400))
	}
	return nil
}

// iperf3Version is the first line of `iperf3 --version`, e.g.
// "iperf 3.12 (cJSON 1.7.15)".
func iperf3Version(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "iperf3 (version unknown)"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// iperfRun is one iperf3 test between a testbed's containers.
type iperfRun struct {
	bin      string
	tb       Testbed
	w        workload
	duration time.Duration
	logs     string // file name prefix for the server log and client output
}

// run starts a fresh server in the server's container, runs the client in
// the client's container, and returns the client's report with the CPU time
// used while the client ran and, for UDP, the datagrams the server's
// socket dropped (Report.ReceiverDrops). The server is stopped by its pid whatever
// happens; so is the client if ctx ends or it hangs.
func (r iperfRun) run(ctx context.Context) (Report, cpuUsage, error) {
	client, server := r.tb.Endpoints()
	port := strconv.Itoa(iperfPort)
	srv, err := cluster.StartProcess(ctx, server.NS, r.logs+"-server.log", r.bin, "-s", "-p", port)
	if err != nil {
		return Report{}, cpuUsage{}, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer srv.Stop()

	argv := append([]string{r.bin, "-c", server.Addr.Addr().String(), "-p", port,
		"-t", strconv.Itoa(int(r.duration / time.Second)),
		"-J", "--get-server-output", "--connect-timeout", "3000"}, r.w.args...)
	udp := slices.Contains(r.w.args, "-u")
	for attempt := 1; ; attempt++ {
		before, err := takeSnapshot(r.tb, false)
		if err != nil {
			return Report{}, cpuUsage{}, err
		}
		var dropsBefore int64
		if udp {
			if dropsBefore, err = udpReceiveDrops(server.NS); err != nil {
				return Report{}, cpuUsage{}, err
			}
		}
		out, err := r.client(ctx, client.NS, fmt.Sprintf("%s-client-%d.json", r.logs, attempt), argv)
		if err != nil {
			return Report{}, cpuUsage{}, err
		}
		after, snapErr := takeSnapshot(r.tb, false)
		var dropsAfter int64
		if udp && snapErr == nil {
			dropsAfter, snapErr = udpReceiveDrops(server.NS)
		}
		rep, err := ParseReport(out)
		switch {
		case errors.Is(err, ErrConnect) && attempt < connectAttempts && !srv.Exited():
			// The server may not be listening yet: back off and retry.
			if err := backoff.Sleep(ctx, time.Duration(attempt)*100*time.Millisecond); err != nil {
				return Report{}, cpuUsage{}, err
			}
			continue
		case err != nil && srv.Exited():
			return Report{}, cpuUsage{}, fmt.Errorf("%w (iperf3 server exited: %s)", err, clip([]byte(srv.Tail(300)), 300))
		case err != nil:
			return Report{}, cpuUsage{}, err
		case snapErr != nil: // e.g. overlayd died during the test
			return Report{}, cpuUsage{}, snapErr
		}
		rep.ReceiverDrops = dropsAfter - dropsBefore
		return rep, after.since(before), nil
	}
}

// client runs the iperf3 client to completion and returns its output.
func (r iperfRun) client(ctx context.Context, ns *netns.NS, outPath string, argv []string) ([]byte, error) {
	return runToEnd(ctx, ns, outPath, argv, r.duration+clientGrace)
}
