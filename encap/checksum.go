package encap

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Checksum returns the 16-bit ones' complement sum of b, added to initial
// (RFC 1071). It is the sum, not its complement: a checksum field is
// written as ^Checksum(...), and a header whose checksum field is correct
// sums to 0xffff.
//
// Sums chain: Checksum(b2, uint32(Checksum(b1, 0))) covers b1 followed by
// b2, provided len(b1) is even. initial may also carry a pseudo-header sum
// (see PseudoHeaderSum).
func Checksum(b []byte, initial uint32) uint16 {
	return Fold(sum(b, uint64(initial)))
}

// Fold folds a ones' complement sum accumulated in 64 bits down to 16 bits.
// It never returns 0 for a non-zero sum.
func Fold(s uint64) uint16 {
	s = s>>32 + s&0xffffffff // < 2^33
	s = s>>16 + s&0xffff     // < 2^17 + 2^16
	s = s>>16 + s&0xffff     // <= 0x10001
	s = s>>16 + s&0xffff     // <= 0xffff
	return uint16(s)
}

// sum adds b to acc in ones' complement arithmetic, eight bytes at a time.
// This is RFC 1071's "parallel summation": since 2^64 ≡ 2^16 ≡ 1 modulo
// 2^16-1, summing big-endian 64-bit words with end-around carry and folding
// afterwards gives the same result as summing 16-bit words. The carry flows
// from one add into the next, which is exactly the end-around carry.
func sum(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), carry)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), carry)
		b = b[2:]
	}
	if len(b) == 1 {
		// An odd final byte is the high byte of a zero-padded word.
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, carry)
	}
	// Fold the last carry back in; a second carry is impossible because a
	// first one leaves acc == 0.
	acc, carry = bits.Add64(acc, carry, 0)
	return acc + carry
}

// PseudoHeaderSum returns the ones' complement sum of the TCP/UDP
// pseudo-header (RFC 768, RFC 8200 §8.1) for src, dst, the protocol number
// and the transport length, to be passed as Checksum's initial value. src
// and dst must be of the same family.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s := uint64(proto) + uint64(length)
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = sum(a[:], s)
		s = sum(b[:], s)
	} else {
		a, b := src.As16(), dst.As16()
		s = sum(a[:], s)
		s = sum(b[:], s)
	}
	return uint32(Fold(s))
}
