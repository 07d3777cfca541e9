package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOptionsCheck: what would only fail as a bring-up timeout is refused
// at once, each problem named.
func TestOptionsCheck(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "overlayd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := (Options{Hosts: 2, Overlayd: bin}).Check(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
	if err := (Options{Hosts: 2, Overlayd: bin, NetworkConfig: DefaultNetworkConfig}).Check(); err != nil {
		t.Errorf("the default config refused: %v", err)
	}
	for _, tc := range []struct {
		opts Options
		want []string
	}{
		{Options{Hosts: 2, Overlayd: filepath.Join(dir, "nosuch")}, []string{"no such file", "make build"}},
		{Options{Hosts: 2, Overlayd: dir}, []string{"not an executable file"}},
		{Options{Hosts: 9, Overlayd: bin}, []string{"9 hosts, want 2 to 8"}},
		{Options{Hosts: 2, Overlayd: bin, NetworkConfig: `{"Network":"100.96.0.0/16","SubnetLne":24}`}, []string{"network config", "did you mean SubnetLen?"}},
	} {
		err := tc.opts.Check()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %v, want it to say %q", tc.opts, err, w)
			}
		}
	}
}
