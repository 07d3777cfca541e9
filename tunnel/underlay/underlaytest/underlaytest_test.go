package underlaytest

import (
	"net"
	"net/netip"
	"testing"
)

var (
	hostA = netip.MustParseAddrPort("198.18.0.1:8285")
	hostB = netip.MustParseAddrPort("198.18.0.2:8285")
	hostC = netip.MustParseAddrPort("198.18.0.3:8285")
)

func read(t *testing.T, c *Conn, bufs int) ([]string, []netip.AddrPort) {
	t.Helper()
	b := make([][]byte, bufs)
	for i := range b {
		b[i] = make([]byte, 4)
	}
	sizes, srcs := make([]int, bufs), make([]netip.AddrPort, bufs)
	n, err := c.ReadBatch(b, sizes, srcs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range n {
		got = append(got, string(b[i][:sizes[i]]))
	}
	return got, srcs[:n]
}

func TestNetwork(t *testing.T) {
	n := NewNetwork()
	a, _ := n.Listen(hostA)
	b, _ := n.Listen(hostB)
	c, _ := n.Listen(hostC)
	if _, err := n.Listen(hostA); err == nil {
		t.Error("second Listen on one address succeeded")
	}

	bufs := [][]byte{[]byte("b1"), []byte("c1"), []byte("b2"), []byte("x"), []byte("truncated")}
	dsts := []netip.AddrPort{hostB, hostC, hostB, netip.MustParseAddrPort("198.18.0.9:8285"), hostB}
	if n, err := a.WriteBatch(bufs, dsts); n != len(bufs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	bufs[0][0] = 'X' // the network must have copied

	got, srcs := read(t, b, 2)
	if len(got) != 2 || got[0] != "b1" || got[1] != "b2" || srcs[0] != hostA || srcs[1] != hostA {
		t.Errorf("b read %q from %v", got, srcs)
	}
	if got, _ = read(t, b, 2); len(got) != 1 || got[0] != "trun" {
		t.Errorf("b read %q, want the truncated datagram", got)
	}
	if got, _ = read(t, c, 8); len(got) != 1 || got[0] != "c1" {
		t.Errorf("c read %q", got)
	}
}

func TestPairClose(t *testing.T) {
	a, b := NewPair(hostA, hostB)
	errc := make(chan error)
	go func() {
		_, err := b.ReadBatch([][]byte{make([]byte, 4)}, make([]int, 1), make([]netip.AddrPort, 1))
		errc <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != net.ErrClosed {
		t.Errorf("pending ReadBatch returned %v, want net.ErrClosed", err)
	}
	if err := b.Close(); err != net.ErrClosed {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	// b's address is free again, and sending to nobody is no error.
	if n, err := a.WriteBatch([][]byte{[]byte("lost")}, []netip.AddrPort{hostB}); n != 1 || err != nil {
		t.Errorf("WriteBatch to a closed peer = %d, %v, want 1, nil", n, err)
	}
	if _, err := b.WriteBatch([][]byte{[]byte("x")}, []netip.AddrPort{hostA}); err != net.ErrClosed {
		t.Errorf("WriteBatch after Close: %v, want net.ErrClosed", err)
	}
}
