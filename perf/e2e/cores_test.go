package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/traffic"
)

// TestEveryCore runs many flows both ways between two hosts of 2 queues
// each and checks that they spread over both workers of both hosts (each
// worker's socket sends and receives), and that no flow is reordered on
// the way: per-flow UDP sequence numbers, and TCP's own out-of-order
// counter (issue 9, item 3).
func TestEveryCore(t *testing.T) {
	const queues = 2
	c := startCluster(t, 2, cluster.Options{DaemonArgs: []string{"--queues=" + strconv.Itoa(queues)}})
	waitFullMesh(t, c)
	pingAllPairs(t, c)
	a, b := c.Daemons[0], c.Daemons[1]
	ctx := context.Background()

	t.Run("UDPFlowsInOrder", func(t *testing.T) {
		for _, dir := range [][2]*cluster.Daemon{{a, b}, {b, a}} {
			src, dst := dir[0], dir[1]
			res, err := udpFlows(src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 5301, 16, 1000)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s -> %s: %s", src.Name(), dst.Name(), res)
			if res.received < res.sent/16 {
				t.Errorf("%s -> %s: too few datagrams arrived to judge the order: %s", src.Name(), dst.Name(), res)
			}
			if res.reordered > 0 || res.duplicated > 0 {
				t.Errorf("%s -> %s: %s", src.Name(), dst.Name(), res)
			}
		}
	})

	t.Run("TCPFlowsInOrder", func(t *testing.T) {
		before := [2]tcpCounters{readTCPCounters(t, a.Container.NS), readTCPCounters(t, b.Container.NS)}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			src, dst := a, b
			if i%2 == 1 {
				src, dst = b, a
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := traffic.Transfer(ctx, src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 0, 2<<20)
				if err == nil && !res.Identical {
					err = fmt.Errorf("%s -> %s: %d bytes, not what was sent", src.Name(), dst.Name(), res.Bytes)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		after := [2]tcpCounters{readTCPCounters(t, a.Container.NS), readTCPCounters(t, b.Container.NS)}
		var ofo, retrans uint64
		for i := range after {
			ofo += after[i].ofoQueued - before[i].ofoQueued
			retrans += after[i].retransSegs - before[i].retransSegs
		}
		t.Logf("16 TCP flows: %d segments queued out of order, %d retransmitted", ofo, retrans)
		// A lost segment also leaves later ones out of order, until it is
		// sent again: only without retransmissions does OFO mean reordered.
		if ofo > 0 && retrans == 0 {
			t.Errorf("TCP received %d segments out of order with none lost (TCPOFOQueue)", ofo)
		}
	})

	t.Run("EveryWorker", func(t *testing.T) {
		for _, d := range c.Daemons {
			s, err := d.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.UnderlayQueues) != queues {
				t.Fatalf("%s: status shows %d underlay queues, want %d", d.Name(), len(s.UnderlayQueues), queues)
			}
			for i, q := range s.UnderlayQueues {
				t.Logf("%s queue %d: received %d, sent %d", d.Name(), i, q["received"], q["sent"])
				if q["received"] == 0 || q["sent"] == 0 {
					t.Errorf("%s: worker %d's socket received %d and sent %d datagrams: the flows did not spread over the workers", d.Name(), i, q["received"], q["sent"])
				}
			}
		}
	})
}

// udpResult is what the receiver of udpFlows saw.
type udpResult struct {
	sent, received, reordered, duplicated int
}

func (r udpResult) String() string {
	return fmt.Sprintf("%d of %d datagrams arrived, %d out of order, %d twice", r.received, r.sent, r.reordered, r.duplicated)
}

// udpFlows sends count datagrams on each of flows UDP flows (one socket,
// so one source port, each) from src to dstAddr:port in dst, taking turns
// between the flows, and counts the datagrams that arrive after a later
// one of their flow. Loss is no reordering: it is counted apart.
func udpFlows(src, dst *netns.NS, dstAddr netip.Addr, port, flows, count int) (udpResult, error) {
	var ln *net.UDPConn
	err := dst.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, uint16(port))))
		return err
	})
	if err != nil {
		return udpResult{}, err
	}
	defer ln.Close()
	ln.SetReadBuffer(4 << 20)

	conns := make([]*net.UDPConn, flows)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	err = src.Do(func() error {
		for i := range conns {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, uint16(port))))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		return udpResult{}, err
	}

	type outcome struct {
		res udpResult
		err error
	}
	done := make(chan outcome, 1)
	sending := make(chan struct{})
	go func() {
		var res udpResult
		next := make([]int, flows) // per flow: the sequence number expected next
		buf := make([]byte, 2048)
		for {
			// Once the sender is done, a quiet second ends the count:
			// what has not come by then was lost.
			select {
			case <-sending:
				ln.SetReadDeadline(time.Now().Add(time.Second))
			default:
				ln.SetReadDeadline(time.Now().Add(time.Minute))
			}
			n, err := ln.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				done <- outcome{res: res}
				return
			}
			if err != nil {
				done <- outcome{err: err}
				return
			}
			if n < 8 {
				continue
			}
			flow, seq := int(binary.BigEndian.Uint32(buf)), int(binary.BigEndian.Uint32(buf[4:]))
			if flow >= flows {
				continue
			}
			res.received++
			switch {
			case seq == next[flow]-1:
				res.duplicated++
			case seq < next[flow]:
				res.reordered++
			default:
				next[flow] = seq + 1
			}
		}
	}()

	msg := make([]byte, 64)
	sent := 0
	for seq := range count {
		for flow, c := range conns {
			binary.BigEndian.PutUint32(msg, uint32(flow))
			binary.BigEndian.PutUint32(msg[4:], uint32(seq))
			if _, err := c.Write(msg); err == nil {
				sent++
			}
		}
	}
	close(sending)
	ln.SetReadDeadline(time.Now().Add(time.Second)) // for a Read already waiting
	o := <-done
	o.res.sent = sent
	return o.res, o.err
}

// tcpCounters are a network namespace's TCP counters that tell reordering
// from loss.
type tcpCounters struct {
	ofoQueued   uint64 // TcpExt TCPOFOQueue: segments that arrived ahead of a hole
	retransSegs uint64 // Tcp RetransSegs
}

// readTCPCounters reads ns's counters from /proc/thread-self/net: /proc/net
// would show the namespace of the process, not of the thread in ns.
func readTCPCounters(t *testing.T, ns *netns.NS) tcpCounters {
	t.Helper()
	var c tcpCounters
	err := ns.Do(func() error {
		netstat, err := procNetCounters("/proc/thread-self/net/netstat")
		if err != nil {
			return err
		}
		snmp, err := procNetCounters("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var ok1, ok2 bool
		c.ofoQueued, ok1 = netstat["TcpExt:TCPOFOQueue"]
		c.retransSegs, ok2 = snmp["Tcp:RetransSegs"]
		if !ok1 || !ok2 {
			return errors.New("TcpExt:TCPOFOQueue or Tcp:RetransSegs missing")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// procNetCounters parses a /proc/net/{netstat,snmp} file: pairs of lines,
// names then values, each line starting with its group ("TcpExt:").
func procNetCounters(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	var names []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		if names == nil || names[0] != fields[0] {
			names = fields
			continue
		}
		for i, v := range fields[1:] {
			if i+1 < len(names) {
				n, _ := strconv.ParseUint(v, 10, 64)
				out[fields[0]+names[i+1]] = n
			}
		}
		names = nil
	}
	return out, sc.Err()
}

// TestCPUSteering runs two hosts of 2 queues with --steering=cpu, where a
// packet goes to the worker of the CPU that sent it, pinned there: every
// pair answers pings, TCP transfers arrive whole both ways, and each
// daemon's forwarding threads are pinned to single CPUs. (That the TUN
// steers by CPU is tunnel/tun's TestCPUSteering.)
func TestCPUSteering(t *testing.T) {
	c := startCluster(t, 2, cluster.Options{DaemonArgs: []string{"--queues=2", "--steering=cpu"}})
	waitFullMesh(t, c)
	pingAllPairs(t, c)
	a, b := c.Daemons[0], c.Daemons[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, dir := range [][2]*cluster.Daemon{{a, b}, {b, a}} {
		src, dst := dir[0], dir[1]
		res, err := traffic.Transfer(ctx, src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 0, 16<<20)
		if err != nil {
			t.Fatalf("%s -> %s: %v", src.Name(), dst.Name(), err)
		}
		if res.Bytes != 16<<20 || !res.Identical {
			t.Fatalf("%s -> %s: %d of %d bytes, identical=%v", src.Name(), dst.Name(), res.Bytes, 16<<20, res.Identical)
		}
	}
	if runtime.NumCPU() < 2 {
		return // one CPU: nothing to pin to
	}
	for _, d := range c.Daemons {
		// Each worker's two routines hold a thread pinned to its CPU.
		if n := singleCPUThreads(t, d.Proc.Pid()); n < 2 {
			t.Errorf("%s: %d threads pinned to a single CPU, want the 2 workers' routines (at least 2)", d.Name(), n)
		}
	}
}

// singleCPUThreads counts the threads of pid allowed on one CPU only.
func singleCPUThreads(t *testing.T, pid int) int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		for line := range strings.Lines(string(b)) {
			if list, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				if list = strings.TrimSpace(list); !strings.ContainsAny(list, ",-") {
					n++
				}
			}
		}
	}
	return n
}
