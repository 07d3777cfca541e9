package bench

import "testing"

func TestSNMPCounter(t *testing.T) {
	snmp := []byte(`Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 262300 0 178070 17 178070 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 5 0 0 0 0
`)
	if v, err := snmpCounter(snmp, "Udp", "RcvbufErrors"); err != nil || v != 178070 {
		t.Errorf("Udp RcvbufErrors = %d, %v; want 178070", v, err)
	}
	if v, err := snmpCounter(snmp, "Udp", "InDatagrams"); err != nil || v != 262300 {
		t.Errorf("Udp InDatagrams = %d, %v; want 262300", v, err)
	}
	if _, err := snmpCounter(snmp, "Udp", "NoSuchCounter"); err == nil {
		t.Error("a missing counter gave no error")
	}
	if _, err := snmpCounter([]byte("Tcp: A\nTcp: 1\n"), "Udp", "RcvbufErrors"); err == nil {
		t.Error("a missing protocol gave no error")
	}
}
