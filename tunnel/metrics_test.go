package tunnel

import (
	"fmt"
	"strings"
	"testing"
)

// Every drop reason has a name of its own, and status and /metrics show
// each one with its own count.
func TestEveryDropReasonIsShownByName(t *testing.T) {
	var s Stats
	seen := map[string]DropReason{}
	for r := DropReason(0); r < numDropReasons; r++ {
		name := r.String()
		if name == "" {
			t.Fatalf("drop reason %d has no name", r)
		}
		if other, dup := seen[name]; dup {
			t.Fatalf("drop reasons %d and %d are both %q", other, r, name)
		}
		seen[name] = r
		s.Drops[r].Add(uint64(r) + 1)
	}
	snap := s.Snapshot()
	var metrics strings.Builder
	writeMetrics(&metrics, Status{Stats: snap})
	for name, r := range seen {
		if got := snap.Drops[name]; got != uint64(r)+1 {
			t.Errorf("status drops[%s] = %d, want %d", name, got, uint64(r)+1)
		}
		if line := fmt.Sprintf("overlayd_drops_total{reason=%q} %d\n", name, uint64(r)+1); !strings.Contains(metrics.String(), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}
