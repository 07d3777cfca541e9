package udp

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// golang.org/x/sys/unix declares Mmsghdr but wraps neither recvmmsg nor
// sendmmsg. A Conn's socket is blocking: both sleep in the kernel, and
// syscall.Syscall6 lets the runtime hand the thread's P to others meanwhile.

// recvmmsgWait receives into msgs, sleeping until the first message
// arrives on a blocking socket and then taking only what is queued
// (MSG_WAITFORONE); len(msgs) must be > 0.
func recvmmsgWait(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_WAITFORONE, 0, 0)
	return int(n), errno
}

// recvmmsgNow is recvmmsgWait that does not wait: EAGAIN when the
// socket is empty.
func recvmmsgNow(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// sendmmsg is underlay.Sendmmsg with MSG_NOSIGNAL: a send after Close's
// shutdown says EPIPE, and raises no SIGPIPE.
func sendmmsg(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_NOSIGNAL, 0, 0)
	return int(n), errno
}

// ctrlSpace is the control-message room per message: one UDP_SEGMENT or
// UDP_GRO message, with space to spare for one more.
const ctrlSpace = 64

// groBufSize is the room for one UDP_GRO message: GRO stops coalescing
// before 64 KiB.
const groBufSize = 1 << 16

// putSockaddr writes ap, which must be IPv4, into sa.
func putSockaddr(sa *unix.RawSockaddrInet4, ap netip.AddrPort) {
	sa.Family = unix.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	sa.Addr = ap.Addr().Unmap().As4()
}

// addrPort decodes sa without allocating.
func addrPort(sa *unix.RawSockaddrInet4) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
}

// putSegmentCmsg writes a UDP_SEGMENT control message asking the kernel to
// cut the datagram into size-byte segments, and returns its length.
func putSegmentCmsg(b []byte, size int) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return unix.CmsgSpace(2)
}

// groSize returns the segment size of a UDP_GRO control message in b, or 0
// if there is none. It allocates nothing, unlike ParseSocketControlMessage.
func groSize(b []byte) int {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		n := int(h.Len)
		if n < unix.SizeofCmsghdr || n > len(b) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && n >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(b[unix.CmsgLen(0):]))
		}
		next := unix.CmsgSpace(n - unix.CmsgLen(0))
		if next >= len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}
