package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/overlayd/overlayd/perf/netns"
)

// udpReceiveDrops is how many datagrams the kernel of ns has dropped so far
// because the receiving socket's buffer was full (Udp RcvbufErrors): the
// losses of a UDP test that happen at the receiving application, after the
// network delivered the datagram.
func udpReceiveDrops(ns *netns.NS) (int64, error) {
	var snmp []byte
	err := ns.Do(func() error {
		// thread-self: /proc/self/net is the main thread's namespace,
		// not the one this locked thread entered.
		var err error
		snmp, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read UDP counters in %s: %w", ns.Name, err)
	}
	v, err := snmpCounter(snmp, "Udp", "RcvbufErrors")
	if err != nil {
		return 0, fmt.Errorf("UDP counters in %s: %w", ns.Name, err)
	}
	return v, nil
}

// snmpCounter finds one counter in /proc/net/snmp's format: for each
// protocol a line of names and then a line of values, both prefixed
// "Proto:".
func snmpCounter(snmp []byte, proto, name string) (int64, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(snmp))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != proto+":" {
			continue
		}
		if names == nil {
			names = fields[1:]
			continue
		}
		for i, n := range names {
			if n == name && i+1 < len(fields) {
				return strconv.ParseInt(fields[i+1], 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("no %s %s counter", proto, name)
}
