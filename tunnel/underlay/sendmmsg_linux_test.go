package underlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

var peer = netip.MustParseAddrPort("198.18.0.2:8285")

// fakeConn runs a Sender's callbacks as the netpoller would, as if the
// socket were always ready again.
type fakeConn struct{ waits int }

func (c *fakeConn) Control(f func(fd uintptr)) error { f(0); return nil }
func (c *fakeConn) Read(f func(fd uintptr) bool) error {
	for !f(0) {
		c.waits++
	}
	return nil
}
func (c *fakeConn) Write(f func(fd uintptr) bool) error {
	for !f(0) {
		c.waits++
	}
	return nil
}

// testLayout gives each message its datagrams as iovecs and refuses
// datagrams to the zero address.
type testLayout struct {
	iovs  []unix.Iovec
	built int
}

func (l *testLayout) Build(s *Sender, bufs [][]byte, dsts []netip.AddrPort, gso bool) {
	l.built = len(bufs)
	for i := 0; i < len(bufs); {
		if !dsts[i].IsValid() {
			s.Refuse(i, dsts[i], unix.EDESTADDRREQ)
			i++
			continue
		}
		segs := 1
		if gso {
			segs = SegmentRun(bufs[i:], dsts[i:])
		}
		for j := i; j < i+segs; j++ {
			SetIovec(&l.iovs[j], bufs[j])
		}
		_, h := s.Add(i, segs, dsts[i])
		h.Iov = &l.iovs[i]
		h.SetIovlen(segs)
		i += segs
	}
}

func (l *testLayout) Release() { clear(l.iovs[:l.built]) }

// newTestSender returns a Sender of chunks of n datagrams that sends with
// sendmmsg, and its conn.
func newTestSender(n int, gso bool, sendmmsg MmsgFunc) (*Sender, *fakeConn) {
	c := &fakeConn{}
	return NewSender(SenderConfig{
		Conn:     c,
		Messages: n,
		Layout:   &testLayout{iovs: make([]unix.Iovec, n)},
		GSO:      gso,
		NoGSO:    unix.EIO,
		Fail:     func(op string, err error) error { return fmt.Errorf("%s: %w", op, err) },
		Sendmmsg: sendmmsg,
	}), c
}

// datagrams returns datagrams of the given sizes, all to peer.
func datagrams(sizes ...int) ([][]byte, []netip.AddrPort) {
	bufs := make([][]byte, len(sizes))
	dsts := make([]netip.AddrPort, len(sizes))
	for i, s := range sizes {
		bufs[i], dsts[i] = make([]byte, s), peer
	}
	return bufs, dsts
}

// TestSendLoop drives the sendmmsg loop through a script of partial sends,
// EAGAIN and a refusal.
func TestSendLoop(t *testing.T) {
	type result struct {
		n     int
		errno syscall.Errno
	}
	script := []result{{3, 0}, {0, unix.EAGAIN}, {0, unix.EINTR}, {2, 0}, {0, unix.EMSGSIZE}, {5, 0}}
	var firsts []int // size of the first datagram of each call
	s, conn := newTestSender(8, false, func(_ uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
		r := script[0]
		script = script[1:]
		firsts = append(firsts, int(msgs[0].Hdr.Iov.Len))
		return min(r.n, len(msgs)), r.errno
	})
	bufs, dsts := datagrams(1, 2, 3, 4, 5, 6, 7, 8)
	n, err := s.Write(bufs, dsts)
	var werr *WriteError
	if n != 7 || !errors.As(err, &werr) || werr.Dropped != 1 || werr.Err != unix.EMSGSIZE || werr.Addr != peer {
		t.Errorf("Write = %d, %v, want 7 and 1 datagram refused (EMSGSIZE)", n, err)
	} else if !slices.Equal(werr.Refused, []int{5}) {
		t.Errorf("refused datagrams %v, want [5] (the one of 6 bytes)", werr.Refused)
	}
	if len(script) != 0 || conn.waits != 1 {
		t.Errorf("%d results unused, waited %d times; want 0, 1", len(script), conn.waits)
	}
	// Each call starts where the last stopped; the refused datagram (6
	// bytes) is skipped.
	if want := []int{1, 4, 4, 4, 6, 7}; !slices.Equal(firsts, want) {
		t.Errorf("calls started at datagrams of sizes %v, want %v", firsts, want)
	}
	if s.Sent() != 7 {
		t.Errorf("Sent = %d, want 7", s.Sent())
	}
}

// TestGSOFallback makes every segmented message fail: its run and the rest
// of the chunk are sent again unsegmented, and on NoGSO GSO is turned off,
// which the Write says once.
func TestGSOFallback(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		off   bool
	}{
		{unix.EIO, true},
		{unix.EINVAL, false}, // as for a segment above the path MTU
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			var sent []int // sizes sent, in order
			s, _ := newTestSender(8, true, func(_ uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
				for k, m := range msgs { // up to the first segmented one
					if m.Hdr.Iovlen > 1 {
						if k == 0 {
							return 0, tc.errno
						}
						return k, 0
					}
					sent = append(sent, int(m.Hdr.Iov.Len))
				}
				return len(msgs), 0
			})
			// One datagram, a run of three with one refused after it,
			// and a second chunk.
			bufs, dsts := datagrams(1, 5, 5, 5, 1, 2, 3, 4, 6, 6)
			dsts[4] = netip.AddrPort{}
			n, err := s.Write(bufs, dsts)
			var werr *WriteError
			if n != 9 || !errors.As(err, &werr) || werr.Dropped != 1 || !slices.Equal(werr.Refused, []int{4}) {
				t.Fatalf("Write = %d, %v (refused %v), want 9 and datagram 4 refused once", n, err, werr.Refused)
			}
			if want := []int{1, 5, 5, 5, 2, 3, 4, 6, 6}; !slices.Equal(sent, want) {
				t.Errorf("sent %v, want %v", sent, want)
			}
			var gerr *GSODisabledError
			if tc.off != errors.As(err, &gerr) || tc.off != errors.Is(err, ErrGSODisabled) || tc.off != errors.Is(err, tc.errno) {
				t.Errorf("after %v, Write returned %v; GSO turned off: %v", tc.errno, err, tc.off)
			}
			if s.GSO() == tc.off || s.GSODisabled() != tc.off {
				t.Errorf("after %v, GSO %v, GSODisabled %v", tc.errno, s.GSO(), s.GSODisabled())
			}
			if n, err := s.Write(bufs[:3], dsts[:3]); n != 3 || err != nil {
				t.Errorf("next Write = %d, %v, want 3, nil: GSO is reported off once", n, err)
			}
		})
	}
}

// TestRefusedIndices: the refused datagrams are listed by their index in
// the batch, in order, across chunks, whether Build or the kernel refused
// them.
func TestRefusedIndices(t *testing.T) {
	s, _ := newTestSender(4, false, func(_ uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
		for k, m := range msgs {
			if m.Hdr.Iov.Len == 3 { // the kernel refuses datagrams of 3 bytes
				if k == 0 {
					return 0, unix.ENETUNREACH
				}
				return k, 0
			}
		}
		return len(msgs), 0
	})
	bufs, dsts := datagrams(1, 3, 1, 1, 1, 1, 3, 1, 1, 1)
	dsts[3], dsts[5] = netip.AddrPort{}, netip.AddrPort{} // Build refuses these
	n, err := s.Write(bufs, dsts)
	var werr *WriteError
	if n != 6 || !errors.As(err, &werr) || werr.Dropped != 4 {
		t.Fatalf("Write = %d, %v, want 6 and 4 datagrams refused", n, err)
	}
	if want := []int{1, 3, 5, 6}; !slices.Equal(werr.Refused, want) {
		t.Errorf("refused datagrams %v, want %v", werr.Refused, want)
	}
	if n, err := s.Write(bufs[:1], dsts[:1]); n != 1 || err != nil {
		t.Errorf("next Write = %d, %v, want 1, nil", n, err)
	}
}

// TestWriteFails: an error of the socket ends the Write, through Fail.
func TestWriteFails(t *testing.T) {
	s, _ := newTestSender(4, false, nil)
	s.cfg.Conn = failingConn{&fakeConn{}}
	bufs, dsts := datagrams(1, 2)
	if n, err := s.Write(bufs, dsts); n != 0 || !errors.Is(err, syscall.EBADF) {
		t.Errorf("Write = %d, %v, want 0 and EBADF", n, err)
	}
}

type failingConn struct{ *fakeConn }

func (failingConn) Write(func(fd uintptr) bool) error { return syscall.EBADF }

func TestSenderAllocs(t *testing.T) {
	s, _ := newTestSender(64, true, func(_ uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) { return len(msgs), 0 })
	bufs, dsts := datagrams(slices.Repeat([]int{1400}, 100)...)
	if allocs := testing.AllocsPerRun(100, func() { s.Write(bufs, dsts) }); allocs != 0 {
		t.Errorf("%v allocations per Write, want 0", allocs)
	}
}
