package afpacket

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
)

// vm runs the program for testLocal with m's verdicts, as the kernel
// would: x/net/bpf's interpreter follows classic BPF's semantics.
func vm(t *testing.T, m match) *bpf.VM {
	t.Helper()
	raw, err := filterProgram(testLocal, m)
	if err != nil {
		t.Fatal(err)
	}
	prog := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		prog[i] = r.Disassemble()
	}
	v, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFilterProgram(t *testing.T) {
	t.Parallel()
	ring, tc := vm(t, ringMatch), vm(t, guardMatch)
	other := netip.MustParseAddrPort("198.18.0.1:8472")
	elsewhere := netip.MustParseAddrPort("198.18.0.3:8285")

	mf := udpFrame(testPeer, testLocal, payloadOf(100))
	mf.flags = layers.IPv4MoreFragments
	later := udpFrame(testPeer, testLocal, payloadOf(100))
	later.fragOff = 185
	opts := udpFrame(testPeer, testLocal, payloadOf(64))
	opts.options = true
	tcp := udpFrame(testPeer, testLocal, nil)
	tcp.proto = layers.IPProtocolTCP
	arp := udpFrame(testPeer, testLocal, nil)
	arp.etherType = layers.EthernetTypeARP

	// A frame whose IHL says 6 words but whose port sits where IHL 5
	// would put it: the filter must follow IHL.
	shifted := udpFrame(testPeer, other, payloadOf(64)).build(t)
	shifted[ethLen] = 0x46
	binary.BigEndian.PutUint16(shifted[ethLen+ipLen:], testLocal.Port())

	for _, c := range []struct {
		name       string
		frame      []byte
		ring, drop bool // captured by the ring; dropped by the guard
	}{
		{"datagram to laddr", udpFrame(testPeer, testLocal, payloadOf(1400)).build(t), true, true},
		{"empty datagram", udpFrame(testPeer, testLocal, nil).build(t), true, true},
		{"with IP options", opts.build(t), true, true},
		{"other port", udpFrame(testPeer, other, payloadOf(10)).build(t), false, false},
		{"other address", udpFrame(testPeer, elsewhere, payloadOf(10)).build(t), false, false},
		{"from laddr", udpFrame(testLocal, testPeer, payloadOf(10)).build(t), false, false},
		{"TCP to the port", tcp.build(t), false, false},
		{"ARP", arp.build(t), false, false},
		{"first fragment", mf.build(t), false, true},
		{"later fragment", later.build(t), false, false},
		{"port found by IHL", shifted, false, false},
	} {
		got, err := ring.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: captureAll, false: 0}[c.ring]; got != want {
			t.Errorf("%s: ring filter returned %#x, want %#x", c.name, got, want)
		}
		got, err = tc.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: tcActShot, false: tcActUnspec}[c.drop]; got != want {
			t.Errorf("%s: guard returned %#x, want %#x", c.name, got, want)
		}
	}

	// Frames cut short: a load past the end ends the program with 0,
	// which the ring takes as "capture nothing".
	full := udpFrame(testPeer, testLocal, payloadOf(10)).build(t)
	for _, n := range []int{0, 13, 20, ethLen + ipLen + 1} {
		if got, _ := ring.Run(full[:n]); got != 0 {
			t.Errorf("ring filter captures a %d-byte frame", n)
		}
	}
}

func TestFilterProgramNeedsIPv4(t *testing.T) {
	t.Parallel()
	if _, err := filterProgram(netip.MustParseAddrPort("[2001:db8::1]:8285"), ringMatch); err == nil {
		t.Error("filter built for an IPv6 address")
	}
}
