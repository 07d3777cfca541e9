package encap

// Params are the per-peer values an encapsulation writes, computed once when
// the peer is learnt (not per packet).
type Params struct {
	VNI    uint32  // VXLAN network identifier to send (24 bits)
	SrcMAC [6]byte // inner Ethernet source: our VTEP MAC
	DstMAC [6]byte // inner Ethernet destination: the peer's VTEP MAC
}

// Header is an encapsulation of inner IPv4 packets, applied in place.
//
// The transmit path reads each packet at offset Len() into its buffer and
// calls Encap on buf[:Len()+n]; the receive path calls Decap on the
// datagram and forwards the returned inner packet. Implementations are
// immutable and safe for concurrent use.
type Header interface {
	// Len is the number of header bytes in front of the inner IP packet. It
	// is constant for the lifetime of the Header.
	Len() int
	// Encap writes the header into frame[:Len()]; frame[Len():] holds the
	// inner packet and is not read.
	Encap(frame []byte, p *Params) error
	// Decap validates frame, including the inner IPv4 header (see
	// ParseIPv4), and returns the inner packet as a subslice of frame that
	// begins at frame[Len()]. Nothing is copied.
	Decap(frame []byte) (inner []byte, err error)
}

// FlannelUDP is flanneld's udp backend: the UDP payload is the inner IPv4
// packet itself, with no header. Encap does nothing; Decap validates the
// packet with ParseIPv4.
var FlannelUDP Header = flannelUDP{}

type flannelUDP struct{}

func (flannelUDP) Len() int { return 0 }

func (flannelUDP) Encap(frame []byte, p *Params) error { return nil }

func (flannelUDP) Decap(frame []byte) ([]byte, error) {
	if err := validateIPv4(frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func (flannelUDP) String() string { return "flannel-udp" }
