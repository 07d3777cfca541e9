package traffic

import (
	"context"
	"net/netip"
	"testing"
)

func TestTransfer(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, b, dst := l.pair(1500)

	for _, n := range []int64{0, 1, 64 << 20} {
		r, err := Transfer(context.Background(), a, b, dst, 0, n)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Identical || r.Bytes != n {
			t.Errorf("%d bytes: got %d bytes, identical %v (sent %x, received %x)", n, r.Bytes, r.Identical, r.SentSHA, r.RecvSHA)
		}
		if n > 0 {
			t.Logf("%d bytes in %v: %.2f Gbit/s", r.Bytes, r.Duration, r.Gbps())
		}
	}
}

func TestTransferNoListener(t *testing.T) {
	l := newLab(t)
	t.Parallel()
	a, b, _ := l.pair(1500)
	// 198.18.1.1 is a's address: b cannot listen on it.
	if _, err := Transfer(context.Background(), a, b, netip.MustParseAddr("198.18.1.1"), 0, 10); err == nil {
		t.Error("Transfer to an address the destination does not have: no error")
	}
}
