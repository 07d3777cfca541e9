package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestIPMasqWithoutIPTables: --ip-masq, also as FLANNELD_IP_MASQ or
// OVERLAYD_IP_MASQ, on a host without iptables names the package to
// install, before anything is started.
func TestIPMasqWithoutIPTables(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no iptables anywhere
	for _, tc := range []struct {
		env  string
		args []string
	}{
		{"", []string{"--ip-masq"}},
		{"FLANNELD_IP_MASQ", nil},
		{"OVERLAYD_IP_MASQ", nil},
	} {
		if tc.env != "" {
			t.Setenv(tc.env, "true")
		}
		args := append([]string{"--log-level", "error", "--etcd-endpoints", "http://127.0.0.1:1"}, tc.args...)
		err := runDaemon(context.Background(), args)
		if err == nil || !strings.Contains(err.Error(), "--ip-masq") || !strings.Contains(err.Error(), "apt-get install iptables") {
			t.Errorf("%s %q: %v; want an --ip-masq error naming the iptables package", tc.env, tc.args, err)
		}
		if tc.env != "" {
			t.Setenv(tc.env, "false")
		}
	}
}

// TestStoppedBeforeReady: a signal while the daemon still waits (for etcd,
// a lease) is a clean stop; an error of its own is not, signal or no.
func TestStoppedBeforeReady(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	waiting := fmt.Errorf("network config: %w", context.Canceled)
	if err := stopped(ctx, waiting, log); err == nil {
		t.Error("context.Canceled without a signal: taken for a clean stop")
	}
	cancel()
	if err := stopped(ctx, waiting, log); err != nil {
		t.Errorf("stopped by a signal while waiting: %v, want nil (exit 0)", err)
	}
	failed := errors.New("--ip-masq: install the packet filter rules: iptables: exit 4")
	if err := stopped(ctx, failed, log); err != failed {
		t.Errorf("an error of its own after a signal: %v, want it kept", err)
	}
}
