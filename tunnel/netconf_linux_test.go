package tunnel

import (
	"strings"
	"testing"
)

// TestResolveExtIfaceLoopback: lo has an address, 127.0.0.1; the error
// says why it is not usable rather than that there is none.
func TestResolveExtIfaceLoopback(t *testing.T) {
	_, err := ResolveExtIface("lo")
	if err == nil {
		t.Fatal("lo accepted as the underlay interface")
	}
	for _, want := range []string{`--iface "lo"`, "127.0.0.1 (loopback)", "other hosts cannot send to"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
