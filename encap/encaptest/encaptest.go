// Package encaptest holds what the tests of encap and encap/offload share:
// readers for their hex golden files and fuzz corpus files, and a
// reference checksum that does not grade the one under test.
package encaptest

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// LoadHex reads a hex file in which '#' starts a comment and whitespace is
// ignored.
func LoadHex(tb testing.TB, path string) []byte {
	tb.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(text)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return b
}

// CorpusBytes reads the []byte argument of a single-argument corpus file
// ("go test fuzz v1" format).
func CorpusBytes(tb testing.TB, file string) []byte {
	tb.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	header, arg, _ := strings.Cut(strings.TrimSpace(string(text)), "\n")
	quoted, ok := strings.CutPrefix(arg, "[]byte(")
	if header != "go test fuzz v1" || !ok {
		tb.Fatalf("%s: not a []byte corpus file", file)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
	if err != nil {
		tb.Fatalf("%s: %v", file, err)
	}
	return []byte(s)
}

// NaiveChecksum is RFC 1071 straight from the text: 16-bit words, folded.
func NaiveChecksum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// FixIPv4Checksum recomputes the header checksum of the IPv4 packet pkt
// with NaiveChecksum.
func FixIPv4Checksum(pkt []byte) {
	ihl := int(pkt[0]&0x0f) * 4
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^NaiveChecksum(pkt[:ihl], 0))
}
