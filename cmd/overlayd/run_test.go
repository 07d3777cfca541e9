package main

import (
	"context"
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
