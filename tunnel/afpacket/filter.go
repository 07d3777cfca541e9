package afpacket

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
)

// One classic BPF program, built for laddr, picks the tunnel's datagrams
// out of an Ethernet frame: IPv4, UDP, to laddr's address and port, with
// the UDP header where IHL says it is. It serves twice, with different
// verdicts: as the ring socket's filter (accept = capture the frame, reject
// = 0 bytes) and as the tc Guard (accept = TC_ACT_SHOT, reject =
// TC_ACT_UNSPEC, which lets any later tc filter see the frame).
//
// Fragments: the ring wants whole datagrams only, as overlayd cannot
// reassemble them (tunnel frames carry DF, so none should come). The Guard
// drops first fragments too, so the kernel never completes a datagram to
// laddr and answers it with a port unreachable; later fragments, whose
// port cannot be known, go to the kernel and expire in its reassembly
// queue, silently since fragment 0 never came.

// A match selects the verdicts and fragment handling of the program.
type match struct {
	accept, reject uint32
	fragMask       uint16 // frame dropped (rejected) if flags&offset has any of these bits
}

const (
	// Socket filters return how many bytes to capture.
	captureAll = 0xffffffff
	// tc direct-action verdicts.
	tcActShot   = 2
	tcActUnspec = 0xffffffff // -1

	ipMF         = 0x2000 // more fragments
	ipOffsetMask = 0x1fff
)

var (
	ringMatch  = match{accept: captureAll, reject: 0, fragMask: ipMF | ipOffsetMask}
	guardMatch = match{accept: tcActShot, reject: tcActUnspec, fragMask: ipOffsetMask}
)

// Offsets in an Ethernet frame carrying IPv4.
const (
	offEtherType = 12
	offIP        = ethLen
	offIPFrag    = offIP + 6
	offIPProto   = offIP + 9
	offIPDst     = offIP + 16
	offUDPDst    = 2 // in the UDP header
)

// filterProgram returns the program for laddr, which must be IPv4.
func filterProgram(laddr netip.AddrPort, m match) ([]bpf.RawInstruction, error) {
	if !laddr.Addr().Is4() {
		return nil, fmt.Errorf("filter for %v: not IPv4", laddr)
	}
	ip := laddr.Addr().As4()
	// Each test jumps to the reject at the end when it fails; skips count
	// the instructions in between.
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offEtherType, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipFalse: 10},
		/* 2 */ bpf.LoadAbsolute{Off: offIPProto, Size: 1},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoUDP, SkipFalse: 8},
		/* 4 */ bpf.LoadAbsolute{Off: offIPDst, Size: 4},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(ip[:]), SkipFalse: 6},
		/* 6 */ bpf.LoadAbsolute{Off: offIPFrag, Size: 2},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(m.fragMask), SkipTrue: 4},
		/* 8 */ bpf.LoadMemShift{Off: offIP}, // X = IHL*4
		/* 9 */ bpf.LoadIndirect{Off: offIP + offUDPDst, Size: 2},
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(laddr.Port()), SkipFalse: 1},
		/* 11 */ bpf.RetConstant{Val: m.accept},
		/* 12 */ bpf.RetConstant{Val: m.reject},
	}
	return bpf.Assemble(prog)
}
