package udp

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/tunnel/underlay"
)

// BenchmarkZerocopy shows why WriteBatch does not use MSG_ZEROCOPY (the
// verdict is in doc/DESIGN-NOTES.md): UDP GSO messages of 44 segments of
// 1472 bytes, in one buffer, to a socket on 127.0.0.1, copied or zerocopy
// with one message in flight, as a forwarder reusing its batch must have.
// A local receiver gets the data copied anyway (copied-% is 100), and the
// process's CPU per message (cpu-ns/op; wall time on a shared machine is
// noise) grows. The forwarder's own layout, a buffer per segment, needs
// more frags than an skb holds: the kernel refuses it (EMSGSIZE, logged).
//
//	go test -run '^$' -bench Zerocopy -count 5 ./tunnel/udp | benchstat -col /mode -
func BenchmarkZerocopy(b *testing.B) {
	for _, mode := range []string{"copy", "zerocopy"} {
		b.Run("mode="+mode, func(b *testing.B) { benchZerocopy(b, mode == "zerocopy") })
	}
}

func benchZerocopy(b *testing.B, zerocopy bool) {
	const segSize, segs = 1472, underlay.MaxGSOPayload / 1472
	rx := listen(b, Options{GRO: true, RecvBuffer: 8 << 20})
	go func() { // drain until the Conn is closed
		rb := newBatch(64, 2048)
		for {
			if _, err := rx.ReadBatch(rb.bufs, rb.sizes, rb.srcs); err != nil {
				return
			}
		}
	}()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) // blocking
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		b.Skipf("kernel lacks UDP_SEGMENT: %v", err)
	}
	flags := 0
	if zerocopy {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1); err != nil {
			b.Skipf("kernel lacks MSG_ZEROCOPY: %v", err)
		}
		flags = unix.MSG_ZEROCOPY
	}

	var name unix.RawSockaddrInet4
	var ctrl [ctrlSpace]byte
	var errCtrl [128]byte
	copied := 0
	putSockaddr(&name, rx.LocalAddr())
	send := func(bufs [][]byte) unix.Errno {
		iovs := make([]unix.Iovec, len(bufs))
		for i, buf := range bufs {
			underlay.SetIovec(&iovs[i], buf)
		}
		h := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&name)), Namelen: unix.SizeofSockaddrInet4, Iov: &iovs[0], Control: &ctrl[0]}
		h.SetIovlen(len(iovs))
		h.SetControllen(putSegmentCmsg(ctrl[:], segSize))
		for {
			_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&h)), uintptr(flags))
			if errno != unix.EINTR {
				return errno
			}
		}
	}
	cut := func(slab []byte, stride int) [][]byte {
		bufs := make([][]byte, segs)
		for i := range bufs {
			bufs[i] = slab[i*stride : i*stride+segSize]
			for j := range bufs[i] {
				bufs[i][j] = byte(i + j) // real pages, not the zero page
			}
		}
		return bufs
	}

	if zerocopy {
		scattered := cut(make([]byte, segs*(64+65535)), 64+65535)
		if errno := send(scattered); errno != 0 {
			b.Logf("the forwarder's layout, %d buffers: %v", segs, errno)
		} else if _, err := awaitZerocopy(fd, errCtrl[:]); err != nil {
			b.Fatal(err)
		}
	}
	bufs := cut(make([]byte, segs*segSize), segSize)
	b.SetBytes(segs * segSize)
	cpu0 := cpuTime()
	for b.Loop() {
		if errno := send(bufs); errno != 0 {
			b.Fatal(errno)
		}
		if zerocopy {
			c, err := awaitZerocopy(fd, errCtrl[:])
			if err != nil {
				b.Fatal(err)
			}
			if c {
				copied++
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if zerocopy {
		b.ReportMetric(float64(100*copied)/float64(b.N), "copied-%")
	}
}

// cpuTime returns the process's user and system time in nanoseconds:
// sender, receiver, and the softirq work the kernel does on their threads.
func cpuTime() int64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// awaitZerocopy waits for the notification of the one zerocopy send in
// flight on fd and reports whether the kernel copied its data after all.
func awaitZerocopy(fd int, ctrl []byte) (copied bool, err error) {
	h := unix.Msghdr{Control: &ctrl[0]}
	poll := []unix.PollFd{{Fd: int32(fd)}} // POLLERR is always reported
	for {
		h.SetControllen(len(ctrl))
		_, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&h)), unix.MSG_ERRQUEUE)
		switch errno {
		case 0:
			ee := (*unix.SockExtendedErr)(unsafe.Pointer(&ctrl[unix.CmsgLen(0)]))
			if h.Controllen < uint64(unix.CmsgLen(int(unsafe.Sizeof(*ee)))) || ee.Origin != unix.SO_EE_ORIGIN_ZEROCOPY {
				return false, unix.EBADMSG
			}
			return ee.Code&unix.SO_EE_CODE_ZEROCOPY_COPIED != 0, nil
		case unix.EAGAIN: // the error queue never blocks a read
			if _, err := unix.Poll(poll, -1); err != nil && err != unix.EINTR {
				return false, err
			}
		case unix.EINTR:
		default:
			return false, errno
		}
	}
}
