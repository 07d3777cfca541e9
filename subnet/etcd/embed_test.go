package etcd

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestStartEmbeddedErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, err := StartEmbedded(ctx, EmbedOptions{}); err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Errorf("no DataDir: %v", err)
	}
	if _, err := StartEmbedded(ctx, EmbedOptions{DataDir: t.TempDir(), ListenClientURLs: []string{"127.0.0.1:2379"}}); err == nil || !strings.Contains(err.Error(), "listen client URL") {
		t.Errorf("URL without scheme: %v", err)
	}
}

// A restarted embedded etcd serves the data it had.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *Embedded {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e, err := StartEmbedded(ctx, EmbedOptions{DataDir: dir, Name: "restart", ListenClientURLs: []string{"http://127.0.0.1:0"}, ListenPeerURL: "http://127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if eps := e.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || strings.HasSuffix(eps[0], ":0") {
			t.Errorf("Endpoints() = %v, want the real loopback port", eps)
		}
		return e
	}
	config := `{"Network":"100.96.0.0/16"}`

	e := start()
	r, err := New(Options{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutConfig(context.Background(), []byte(config)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	e.Close()

	e = start()
	defer e.Close()
	r, err = New(Options{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg, err := r.GetConfig(context.Background())
	if err != nil || cfg.Network.String() != "100.96.0.0/16" {
		t.Errorf("after restart: %+v, %v", cfg, err)
	}
}

// A clean stop logs nothing above Debug: etcd reports its listeners
// closing as errors. "ready" is logged once.
func TestEmbeddedStopsQuietly(t *testing.T) {
	t.Parallel()
	var h recordHandler
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbedOptions{DataDir: t.TempDir(), Name: "quiet", Logger: slog.New(&h),
		ListenClientURLs: []string{"http://127.0.0.1:0"}, ListenPeerURL: "http://127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	started := len(h.records)
	h.mu.Unlock()
	e.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	ready := 0
	for i, r := range h.records {
		if r.Message == "embedded etcd ready" {
			ready++
		}
		if i >= started && r.Level > slog.LevelDebug {
			t.Errorf("logged while stopping: %v %q %v", r.Level, r.Message, h.attrs[i])
		}
	}
	if ready != 1 {
		t.Errorf("logged ready %d times, want once", ready)
	}
}
