package traffic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ICMPv4 message types and codes Ping understands (RFC 792, RFC 1191).
const (
	icmpEchoReply      = 0
	icmpDestUnreach    = 3
	icmpEchoRequest    = 8
	icmpTimeExceeded   = 11
	icmpParamProblem   = 12
	icmpCodeFragNeeded = 4

	ipv4HeaderLen = 20
	icmpHeaderLen = 8

	// MinPingSize and MaxPingSize bound Ping's size, which counts the
	// IPv4 header, the ICMP header and the payload.
	MinPingSize = ipv4HeaderLen + icmpHeaderLen
	MaxPingSize = 65535
)

// errCorruptReply is an echo reply carrying our id and sequence number whose
// checksum or payload does not match what was sent.
var errCorruptReply = errors.New("corrupt echo reply")

// buildEcho fills msg, an ICMP message without its IP header, with an echo
// request: id, seq and a payload pattern that a reply must return unchanged.
// len(msg) must be at least icmpHeaderLen.
func buildEcho(msg []byte, id, seq uint16) {
	msg[0], msg[1] = icmpEchoRequest, 0
	binary.BigEndian.PutUint16(msg[2:], 0)
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	for i := range msg[icmpHeaderLen:] {
		msg[icmpHeaderLen+i] = byte(i) ^ byte(seq)
	}
	binary.BigEndian.PutUint16(msg[2:], checksum(msg))
}

// checksum is the Internet checksum (RFC 1071) of b. Over a message that
// carries its checksum it yields 0.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// match decides whether msg, an ICMP message (IP header removed) that came
// from from, answers echo, the request sent to dst. It returns ok false for
// anybody else's ICMP, and an error for a reply to echo that arrived damaged.
func match(msg []byte, from netip.Addr, echo []byte, dst netip.Addr) (r PingResult, ok bool, err error) {
	if len(msg) < icmpHeaderLen {
		return PingResult{}, false, nil
	}
	switch msg[0] {
	case icmpEchoReply:
		if from != dst || msg[1] != 0 || !bytes.Equal(msg[4:8], echo[4:8]) {
			return PingResult{}, false, nil
		}
		if checksum(msg) != 0 || !bytes.Equal(msg[icmpHeaderLen:], echo[icmpHeaderLen:]) {
			return PingResult{}, false, fmt.Errorf("%w from %s: %d bytes, sent %d", errCorruptReply, from, len(msg), len(echo))
		}
		return PingResult{Reply: true, From: from}, true, nil
	case icmpDestUnreach, icmpTimeExceeded, icmpParamProblem:
		if !quotesEcho(msg[icmpHeaderLen:], echo, dst) {
			return PingResult{}, false, nil
		}
		r := PingResult{From: from, ICMPType: msg[0], ICMPCode: msg[1]}
		if msg[0] == icmpDestUnreach && msg[1] == icmpCodeFragNeeded {
			r.FragNeeded = true
			r.NextHopMTU = int(binary.BigEndian.Uint16(msg[6:8])) // 0 from pre-RFC 1191 routers
		} else {
			r.Unreachable = true
		}
		return r, true, nil
	}
	return PingResult{}, false, nil
}

// quotesEcho reports whether quoted, the start of the datagram an ICMP error
// is about, is echo on its way to dst: its IPv4 header and the first 8 bytes
// of the ICMP message, where type, id and sequence number sit.
func quotesEcho(quoted, echo []byte, dst netip.Addr) bool {
	if len(quoted) < ipv4HeaderLen || quoted[0]>>4 != 4 {
		return false
	}
	ihl := int(quoted[0]&0x0f) * 4
	if ihl < ipv4HeaderLen || len(quoted) < ihl+icmpHeaderLen {
		return false
	}
	const protoICMP = 1
	if quoted[9] != protoICMP || netip.AddrFrom4([4]byte(quoted[16:20])) != dst {
		return false
	}
	icmp := quoted[ihl:]
	return icmp[0] == icmpEchoRequest && bytes.Equal(icmp[4:8], echo[4:8])
}
