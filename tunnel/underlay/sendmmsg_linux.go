package underlay

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// golang.org/x/sys/unix declares Mmsghdr but wraps neither recvmmsg nor
// sendmmsg. Both are called from a RawWriter's callbacks: a blocking
// socket sleeps in the kernel, and on a nonblocking one EAGAIN sends the
// RawWriter to wait until the socket is writable.

// MmsgFunc is the signature of recvmmsg and sendmmsg, so tests can wrap them.
type MmsgFunc func(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno)

// Sendmmsg sends msgs; len(msgs) must be > 0. It returns how many messages
// the kernel took; an error only if it took none.
func Sendmmsg(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	return int(n), errno
}

// SetIovec points iov at buf.
func SetIovec(iov *unix.Iovec, buf []byte) {
	if len(buf) == 0 {
		iov.Base = nil
	} else {
		iov.Base = &buf[0]
	}
	iov.SetLen(len(buf))
}

// A Layout turns datagrams into sendmmsg messages for a Sender: the part of
// sending that differs between underlays (addresses, headers, control
// messages).
type Layout interface {
	// Build lays out bufs, one chunk of the batch's datagrams, as
	// messages, calling s.Add for each in order. With gso it may give a
	// message a run of datagrams (SegmentRun) for the kernel to segment.
	// Datagrams it cannot send it skips and reports with s.Refuse.
	Build(s *Sender, bufs [][]byte, dsts []netip.AddrPort, gso bool)

	// Release drops the references the last Build made to the caller's
	// buffers, once the chunk is sent.
	Release()
}

// A RawWriter runs f on a socket until f reports it done, waiting for the
// socket to be writable whenever f says it is not: a blocking socket's own
// loop (tunnel/udp), a poll(2) loop on a nonblocking one (tunnel/afpacket),
// or a syscall.RawConn's Write (the netpoller).
type RawWriter interface {
	Write(f func(fd uintptr) (done bool)) error
}

// SenderConfig configures NewSender.
type SenderConfig struct {
	Conn     RawWriter // the socket
	Messages int       // the most messages, and datagrams, per sendmmsg
	Layout   Layout
	GSO      bool // Build may segment

	// NoGSO is the errno by which the kernel says that the socket takes
	// no segmented message at all (EIO from a device that cannot segment
	// UDP, EINVAL from a packet socket before Linux 6.2): GSO is then
	// turned off for good. Any other refusal of a segmented message
	// refuses only that run, which is sent again unsegmented.
	NoGSO syscall.Errno

	// Fail turns an error of the socket into Write's error.
	Fail func(op string, err error) error

	// Sendmmsg is the system call; nil means sendmmsg(2). Tests wrap it.
	Sendmmsg MmsgFunc
}

// Sender is the sendmmsg driver of both underlays. It sends a batch in
// chunks of at most Messages datagrams, which the Layout builds, through
// the Conn, and handles what the kernel does with them: partial
// sends, EAGAIN, refused datagrams (a *WriteError) and segmented messages
// refused (sent again unsegmented, and GSO turned off for good on NoGSO:
// a *GSODisabledError, once). It allocates nothing unless datagrams are
// refused. Write calls must not overlap.
type Sender struct {
	cfg  SenderConfig
	msgs []unix.Mmsghdr
	meta []message
	send func(fd uintptr) bool // s.do, bound once

	gso         atomic.Bool
	sentTotal   atomic.Uint64
	gsoDisabled atomic.Bool

	// Per chunk.
	count, next int
	// When a segmented message is refused, the chunk is sent again
	// unsegmented from its datagram resend on; gsoErrno is the refusal.
	resend   int
	gsoErrno syscall.Errno

	// Per Write.
	sent, dropped int
	counted       int   // refusals of the batch's datagrams before this one are counted
	base          int   // the chunk's first datagram in the batch
	refused       []int // the batch's datagrams refused, for WriteError.Refused
	errAddr       netip.AddrPort
	err           error
}

// message is what a Sender knows of one message of a chunk: it carries
// segs datagrams of the chunk from first on, to dst.
type message struct {
	first, segs int
	dst         netip.AddrPort
}

// NewSender returns a Sender for cfg.
func NewSender(cfg SenderConfig) *Sender {
	if cfg.Sendmmsg == nil {
		cfg.Sendmmsg = Sendmmsg
	}
	s := &Sender{cfg: cfg, msgs: make([]unix.Mmsghdr, cfg.Messages), meta: make([]message, cfg.Messages)}
	s.gso.Store(cfg.GSO)
	s.send = s.do
	return s
}

// Add appends a message to the chunk being built: it carries segs of the
// chunk's datagrams from first on, to dst. It returns the message's index
// in the chunk and its header, for the Layout to fill.
func (s *Sender) Add(first, segs int, dst netip.AddrPort) (int, *unix.Msghdr) {
	k := s.count
	s.meta[k] = message{first: first, segs: segs, dst: dst}
	s.count++
	return k, &s.msgs[k].Hdr
}

// Refuse records that datagram i of the chunk being built, to dst, cannot
// be sent. It reports whether that is news: a chunk built again after a
// refused segmented message refuses its datagrams again, and they count
// once.
func (s *Sender) Refuse(i int, dst netip.AddrPort, err error) bool {
	if s.base+i < s.counted {
		return false
	}
	s.refuse(s.base+i, dst, err)
	return true
}

// refuse records that datagram i of the batch, to dst, was refused.
func (s *Sender) refuse(i int, dst netip.AddrPort, err error) {
	if s.dropped == 0 {
		s.errAddr, s.err = dst, err
	}
	s.dropped++
	s.refused = append(s.refused, i)
}

// GSO reports whether Build is asked to segment.
func (s *Sender) GSO() bool { return s.gso.Load() }

// Sent is the number of datagrams the kernel has taken.
func (s *Sender) Sent() uint64 { return s.sentTotal.Load() }

// GSODisabled reports whether Write has turned GSO off.
func (s *Sender) GSODisabled() bool { return s.gsoDisabled.Load() }

// Write sends bufs[i] to dsts[i] as Conn.WriteBatch does.
func (s *Sender) Write(bufs [][]byte, dsts []netip.AddrPort) (int, error) {
	s.sent, s.dropped, s.counted, s.errAddr, s.err = 0, 0, 0, netip.AddrPort{}, nil
	s.refused = s.refused[:0]
	gso := s.gso.Load()
	var disabled syscall.Errno
	for pos := 0; pos < len(bufs); {
		end := min(pos+len(s.msgs), len(bufs))
		s.count, s.next, s.resend, s.gsoErrno, s.base = 0, 0, -1, 0, pos
		s.cfg.Layout.Build(s, bufs[pos:end], dsts[pos:end], gso)
		s.counted = max(s.counted, end)
		err := s.cfg.Conn.Write(s.send)
		s.cfg.Layout.Release() // keep none of the caller's buffers alive
		if err != nil {
			s.sentTotal.Add(uint64(s.sent))
			return s.sent, s.cfg.Fail("sendmmsg", err)
		}
		if s.resend >= 0 {
			if s.gsoErrno == s.cfg.NoGSO && s.gso.CompareAndSwap(true, false) {
				s.gsoDisabled.Store(true)
				disabled = s.gsoErrno
			}
			pos, gso = pos+s.resend, false
			continue
		}
		pos = end
	}
	s.sentTotal.Add(uint64(s.sent))
	var err error
	if s.dropped > 0 {
		// A datagram refused by Build may follow one refused by the kernel.
		slices.Sort(s.refused)
		err = &WriteError{Dropped: s.dropped, Addr: s.errAddr, Err: s.err, Refused: slices.Clone(s.refused)}
	}
	if disabled != 0 {
		err = &GSODisabledError{Errno: disabled, Err: err}
	}
	return s.sent, err
}

// do sends the chunk's messages from s.next on. It returns false, asking
// the RawWriter to wait, when the send buffer is full. sendmmsg stops at
// the first message the kernel refuses: an unsegmented one is dropped and
// the rest sent by the next round of the loop; a segmented one ends the
// chunk, to be sent again unsegmented.
func (s *Sender) do(fd uintptr) bool {
	for s.next < s.count {
		n, errno := s.cfg.Sendmmsg(fd, s.msgs[s.next:s.count])
		if errno == 0 && n <= 0 {
			errno = unix.EIO // impossible for a nonempty batch; do not spin on it
		}
		switch {
		case errno == 0:
			for _, m := range s.meta[s.next : s.next+n] {
				s.sent += m.segs
			}
			s.next += n
		case errno == unix.EINTR:
		case errno == unix.EAGAIN:
			return false
		case s.meta[s.next].segs > 1:
			// NoGSO, or an error that would refuse the whole run,
			// such as EINVAL or EMSGSIZE (by kernel version) for a segment
			// above the path MTU: sent
			// unsegmented, only its oversized datagrams are.
			s.resend, s.gsoErrno = s.meta[s.next].first, errno
			return true
		default:
			s.refuse(s.base+s.meta[s.next].first, s.meta[s.next].dst, errno)
			s.next++
		}
	}
	return true
}
