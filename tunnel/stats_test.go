package tunnel

import (
	"errors"
	"fmt"
	"testing"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// The datagrams an underlay, or packets a TUN, refused in the middle of a
// batch are charged to their own peers, not to the packets at the batch's
// end; without the refused indices the last ones are, as the totals are
// all that is known.
func TestUnsentChargesTheRefusedPeers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		drops [3]uint64 // per peer, a b c
	}{
		{"refused listed", &underlay.WriteError{Dropped: 2, Refused: []int{0, 2}}, [3]uint64{1, 0, 1}},
		{"wrapped", fmt.Errorf("gso off: %w", &underlay.WriteError{Dropped: 1, Refused: []int{1}}), [3]uint64{0, 1, 0}},
		{"refused unknown", &underlay.WriteError{Dropped: 1}, [3]uint64{0, 0, 1}},
		{"socket failed", errors.New("sendmmsg: bad file descriptor"), [3]uint64{0, 0, 1}},
		{"TUN refused listed", &tun.WriteError{Dropped: 1, Refused: []int{0}}, [3]uint64{1, 0, 0}},
		{"TUN refused unknown", &tun.WriteError{Dropped: 2}, [3]uint64{0, 1, 1}},
		{"refused out of order", &tun.WriteError{Dropped: 2, Refused: []int{2, 0}}, [3]uint64{0, 1, 1}},
		{"refused out of range", &underlay.WriteError{Dropped: 1, Refused: []int{3}}, [3]uint64{0, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var peers [3]subnet.PeerDirCounters
			b := newBatchStats(4)
			for i := range peers {
				b.forwarded(&peers[i], 100+i)
			}
			dropped := 0
			for _, d := range tc.drops {
				dropped += int(d)
			}
			b.unsentBy(DropSendError, len(peers)-dropped, len(peers), tc.err)
			for i := range peers {
				if got := peers[i].Drops.Load(); got != tc.drops[i] {
					t.Errorf("peer %d: %d drops, want %d", i, got, tc.drops[i])
				}
			}
			if b.drops[DropSendError] != uint64(dropped) || int(b.packets()) != len(peers)-dropped {
				t.Errorf("%d drops, %d packets forwarded; want %d, %d", b.drops[DropSendError], b.packets(), dropped, len(peers)-dropped)
			}
			var wantBytes uint64
			for i := range peers {
				if tc.drops[i] == 0 {
					wantBytes += uint64(100 + i)
				}
			}
			if got := b.bytes(); got != wantBytes {
				t.Errorf("%d bytes forwarded, want %d (those of the peers sent to)", got, wantBytes)
			}
		})
	}
}
