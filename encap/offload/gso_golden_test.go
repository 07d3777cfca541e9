package offload

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/encaptest"
)

// goldenTSO is a TCP/IPv4 super-packet read from a real TUN with offloads
// (see the file's comments), virtio-net header first.
const goldenTSO = "testdata/gso_tcp4_kernel.hex"

// TestGoldenKernelTSO splits what the kernel handed over into segments a
// peer accepts, and coalesces them back into exactly what the kernel
// would have made.
func TestGoldenKernelTSO(t *testing.T) {
	t.Parallel()
	raw := encaptest.LoadHex(t, goldenTSO)
	var h VirtioNetHdr
	if err := h.Decode(raw); err != nil {
		t.Fatal(err)
	}
	want := VirtioNetHdr{Flags: VirtioNeedsCsum, GSOType: GSOTCPv4, HdrLen: 52, GSOSize: 1420, CsumStart: 20, CsumOffset: 16}
	if h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	super := raw[VirtioNetHdrLen:]

	// The kernel's CHECKSUM_PARTIAL convention, which Coalesce follows:
	// the pseudo-header sum over the whole TCP length, not complemented.
	partial := bytes.Clone(super)
	setPartialChecksum(partial, false, protoTCP, 20, tcpOffChecksum)
	if !bytes.Equal(partial, super) {
		t.Errorf("kernel's TCP checksum field %#04x, setPartialChecksum writes %#04x", be16(super[36:]), be16(partial[36:]))
	}

	out, sizes := newBufs(8, 1472)
	n, _, err := SplitGSO(super, h, out, sizes, 0, SplitOptions{})
	if err != nil || n != 5 {
		t.Fatalf("SplitGSO = %d, %v, want 5 segments", n, err)
	}
	segs := make([][]byte, n)
	firstSeq, firstID := binary.BigEndian.Uint32(super[24:]), be16(super[4:])
	for i := range n {
		segs[i] = out[i][:sizes[i]]
		if len(segs[i]) != 1472 {
			t.Errorf("segment %d: %d bytes, want the MTU 1472", i, len(segs[i]))
		}
		p := checkWirePacket(t, segs[i])
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip.Id != firstID+uint16(i) || int(ip.Length) != len(segs[i]) {
			t.Errorf("segment %d: IP ID %d length %d", i, ip.Id, ip.Length)
		}
		if tcp.Seq != firstSeq+uint32(i*1420) || tcp.PSH != (i == n-1) || !tcp.ACK || len(tcp.Options) != 3 {
			t.Errorf("segment %d: seq %d PSH %v ACK %v options %v", i, tcp.Seq, tcp.PSH, tcp.ACK, tcp.Options)
		}
		if !bytes.Equal(tcp.Payload, super[52+i*1420:52+(i+1)*1420]) {
			t.Errorf("segment %d: payload differs", i)
		}
	}

	bufs := groBatch(segs, 65535)
	var table GROTable
	if toWrite := Coalesce(bufs, groOffset, &table, nil); len(toWrite) != 1 {
		t.Fatalf("coalesced into %d packets, want 1", len(toWrite))
	}
	if !bytes.Equal(bufs[0][groOffset-VirtioNetHdrLen:], raw) {
		t.Error("coalesced packet and header differ from the kernel's")
	}
}
