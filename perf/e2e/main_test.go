package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
)

// clusterSeq keeps namespace names unique between parallel tests.
var clusterSeq atomic.Int32

// overlaydBin is built once for the whole package by TestMain.
var overlaydBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() == 0 && !testing.Short() {
		dir, err := os.MkdirTemp("", "overlayd-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		overlaydBin = filepath.Join(dir, "overlayd")
		build := exec.Command("go", "build", "-o", overlaydBin, "github.com/overlayd/overlayd/cmd/overlayd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build overlayd:", err)
			return 1
		}
	}
	return m.Run()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration test: needs root to create network namespaces (run make test as root)")
	}
}

// startCluster brings up n hosts and tears them down when the test ends,
// whatever its outcome.
func startCluster(t *testing.T, n int, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	requireRoot(t)
	opts.Prefix = netns.Prefix(fmt.Sprintf("e2e%d", clusterSeq.Add(1)))
	opts.Hosts = n
	opts.Overlayd = overlaydBin
	opts.WorkDir = t.TempDir()
	opts.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		dumpLogs(t, opts.WorkDir)
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, opts.WorkDir)
		}
		if err := c.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c
}

// dumpLogs shows the daemons' logs of a failed test.
func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "overlayd.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 8192 {
			b = b[len(b)-8192:]
		}
		t.Logf("---- %s ----\n%s", l, b)
	}
}
