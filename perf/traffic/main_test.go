package traffic

import (
	"os"
	"runtime"
	"testing"
)

// TestMain gives the test process the Ps the rr loops need. They wait in
// raw system calls, each holding a P (rr_linux.go), and the tests run rr
// clients, rr servers and Go netpoller echo servers side by side in one
// process: with GOMAXPROCS at the core count, a server goroutine could wait
// for sysmon to preempt a client blocked in read, and the client's UDP
// timeouts would fire first.
func TestMain(m *testing.M) {
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 8*RRProcs))
	os.Exit(m.Run())
}
