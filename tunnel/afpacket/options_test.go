package afpacket

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	t.Parallel()
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.BatchSize != DefaultBatchSize || o.BlockSize != DefaultBlockSize || o.Blocks != DefaultBlocks ||
		o.BlockTimeout != DefaultBlockTimeout || o.SendBuffer != defaultSendBuffer || o.Guard != GuardAuto {
		t.Errorf("defaults: %+v", o)
	}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{BatchSize: 1025}, "batch size"},
		{Options{BatchSize: -1}, "batch size"},
		{Options{BlockSize: 64 << 10}, "block size"},       // cannot hold a 64 KiB frame
		{Options{BlockSize: 192 << 10}, "block size"},      // not a power of two
		{Options{Blocks: 1}, "blocks"},                     // the kernel needs one to fill while we read one
		{Options{BlockTimeout: time.Microsecond}, "milli"}, // below the kernel's unit
		{Options{Guard: 7}, "guard"},
	} {
		if _, err := c.opts.withDefaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.opts, err, c.want)
		}
	}
}

func TestGuardString(t *testing.T) {
	t.Parallel()
	for g, want := range map[Guard]string{GuardAuto: "auto", GuardTC: "tc", GuardSocket: "socket", 9: "Guard(9)"} {
		if got := g.String(); got != want {
			t.Errorf("%d: %q, want %q", int(g), got, want)
		}
	}
}
