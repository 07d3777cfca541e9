package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/subnet/backoff"
)

// RRServer answers request/response clients over TCP and UDP on one port by
// echoing every request back. Its sockets belong to the network namespace
// of the thread that called ListenRR (run it inside netns.Do, or in a
// process started in the namespace); Serve may run anywhere.
type RRServer struct {
	tcp, udp int
	addr     netip.AddrPort
	conns    sync.WaitGroup // TCP connections being served

	mu      sync.Mutex
	closed  atomic.Bool // read by the loops, which poll it every rrPoll
	serving bool
	done    chan struct{} // closed when Serve returns
	release sync.Once     // closes tcp and udp
}

// ListenRR opens the server's TCP and UDP sockets on addr, an IPv4 address
// and port; port 0 picks one free for both, which Addr tells.
func ListenRR(addr netip.AddrPort) (*RRServer, error) {
	ip := addr.Addr().Unmap()
	if !ip.Is4() {
		return nil, fmt.Errorf("rr server %s: want an IPv4 address", addr)
	}
	s := &RRServer{tcp: -1, udp: -1, done: make(chan struct{})}
	fail := func(err error) (*RRServer, error) {
		s.closeSockets()
		return nil, fmt.Errorf("rr server %s: %w", addr, err)
	}
	var err error
	if s.tcp, err = blockingSocket(unix.SOCK_STREAM, rrPoll); err != nil {
		return fail(err)
	}
	if err := unix.SetsockoptInt(s.tcp, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(fmt.Errorf("set SO_REUSEADDR: %w", err))
	}
	if err := unix.Bind(s.tcp, &unix.SockaddrInet4{Addr: ip.As4(), Port: int(addr.Port())}); err != nil {
		return fail(fmt.Errorf("bind tcp: %w", err))
	}
	if err := unix.Listen(s.tcp, 16); err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	sa, err := unix.Getsockname(s.tcp)
	if err != nil {
		return fail(fmt.Errorf("getsockname: %w", err))
	}
	port := sa.(*unix.SockaddrInet4).Port
	if s.udp, err = blockingSocket(unix.SOCK_DGRAM, rrPoll); err != nil {
		return fail(err)
	}
	if err := unix.Bind(s.udp, &unix.SockaddrInet4{Addr: ip.As4(), Port: port}); err != nil {
		return fail(fmt.Errorf("bind udp: %w", err))
	}
	s.addr = netip.AddrPortFrom(ip, uint16(port))
	return s, nil
}

// Addr is where the server listens.
func (s *RRServer) Addr() netip.AddrPort { return s.addr }

// Serve answers clients until Close, then returns nil; an error is for a
// socket that failed. TCP connections are served concurrently.
func (s *RRServer) Serve() error {
	s.mu.Lock()
	if s.serving || s.closed.Load() {
		s.mu.Unlock()
		return errors.New("rr server: Serve called twice or after Close")
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.done)

	// A failed socket stops the other loop too: half a server would
	// only confuse the client.
	udpErr := make(chan error, 1)
	go func() {
		err := s.serveUDP()
		if err != nil {
			s.closed.Store(true)
		}
		udpErr <- err
	}()
	err := s.serveTCP()
	if err != nil {
		s.closed.Store(true)
	}
	err = errors.Join(err, <-udpErr)
	s.conns.Wait()
	return err
}

// Close stops Serve (within rrPoll) and closes the sockets.
func (s *RRServer) Close() error {
	s.mu.Lock()
	s.closed.Store(true)
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.done
	}
	s.closeSockets()
	return nil
}

func (s *RRServer) closeSockets() {
	s.release.Do(func() {
		for _, fd := range []int{s.tcp, s.udp} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
}

func (s *RRServer) serveTCP() error {
	for !s.closed.Load() {
		fd, _, err := unix.Accept4(s.tcp, unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err != nil:
			return fmt.Errorf("rr server: accept: %w", err)
		}
		if err := tuneTCP(fd, rrPoll); err != nil {
			unix.Close(fd)
			return fmt.Errorf("rr server: %w", err)
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer unix.Close(fd)
			s.echoTCP(fd)
		}()
	}
	return nil
}

// echoTCP writes back whatever arrives on fd until the client closes it or
// the server is closed. A broken connection ends only itself.
func (s *RRServer) echoTCP(fd int) {
	buf := make([]byte, rrMaxSize)
	var pace yielder
	for {
		pace.tick()
		n, err := rawRead(fd, buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			if s.closed.Load() {
				return
			}
			continue
		case err != nil || n == 0:
			return
		}
		if writeFull(fd, buf[:n]) != nil {
			return
		}
	}
}

func (s *RRServer) serveUDP() error {
	buf := make([]byte, rrMaxSize)
	var from unix.RawSockaddrAny
	var pace yielder
	for !s.closed.Load() {
		pace.tick()
		fromLen := uint32(unsafe.Sizeof(from))
		n, err := recvfrom(s.udp, buf, &from, &fromLen)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("rr server: udp receive: %w", err)
		}
		// A client that went away is no reason to stop answering others.
		sendto(s.udp, buf[:n], &from, fromLen)
	}
	return nil
}

// RRClient is one client connection, ready to Run.
type RRClient struct {
	opts     RROptions
	fd       int
	req, rsp []byte
	seq      uint64
	hist     *Histogram
}

// RR runs a request/response client against a server: DialRR, Run, Close.
func RR(ctx context.Context, opts RROptions) (RRResult, error) {
	c, err := DialRR(ctx, opts)
	if err != nil {
		return RRResult{}, err
	}
	defer c.Close()
	return c.Run(ctx)
}

// DialRR opens the client's socket, in the network namespace of the calling
// thread, and completes one untimed transaction with the server, retrying
// for up to opts.Wait while the server is not there yet.
func DialRR(ctx context.Context, opts RROptions) (*RRClient, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &RRClient{opts: opts, fd: -1, req: make([]byte, opts.Size), rsp: make([]byte, opts.Size), hist: new(Histogram)}
	deadline := time.Now().Add(opts.Wait)
	var last error
	for {
		if last = c.connect(); last == nil {
			ok, err := c.transact()
			if ok {
				return c, nil
			}
			last = err
			if err == nil {
				last = fmt.Errorf("%w within %s", errNoResponse, opts.Timeout)
			}
		}
		if !retryable(last) || !time.Now().Before(deadline) {
			break
		}
		if err := backoff.Sleep(ctx, 20*time.Millisecond); err != nil {
			last = err
			break
		}
	}
	c.Close()
	return nil, fmt.Errorf("rr %s client to %s: %w", opts.Protocol, opts.Addr, last)
}

// connect opens a fresh socket connected to the server (for UDP this only
// fixes the peer), closing any previous one.
func (c *RRClient) connect() error {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	typ, recvTimeout := unix.SOCK_STREAM, rrStall
	if c.opts.Protocol == "udp" {
		typ, recvTimeout = unix.SOCK_DGRAM, c.opts.Timeout
	}
	fd, err := blockingSocket(typ, recvTimeout)
	if err != nil {
		return err
	}
	c.fd = fd
	if typ == unix.SOCK_STREAM {
		if err := tuneTCP(fd, recvTimeout); err != nil {
			return err
		}
		// Bound connect, which waits as long as the send timeout.
		tv := unix.NsecToTimeval(int64(time.Second))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return fmt.Errorf("set SO_SNDTIMEO: %w", err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: c.opts.Addr.Addr().As4(), Port: int(c.opts.Addr.Port())}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

// errNoResponse is a request that got no response in time.
var errNoResponse = errors.New("no response")

// retryable are the errors of a server that is not listening yet, or a
// path that is still settling.
func retryable(err error) bool {
	for _, e := range []error{errNoResponse, unix.ECONNREFUSED, unix.EINPROGRESS, unix.ETIMEDOUT, unix.EAGAIN, unix.EINTR, unix.EHOSTUNREACH, unix.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// transact sends one request and waits for its response. It returns false
// without an error when a UDP response did not come within the timeout. A
// late response to an earlier request is skipped; the wait for it restarts
// the timeout.
func (c *RRClient) transact() (bool, error) {
	c.seq++
	binary.LittleEndian.PutUint64(c.req, c.seq)
	if err := writeFull(c.fd, c.req); err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	if c.opts.Protocol == "tcp" {
		if err := readFull(c.fd, c.rsp); err != nil {
			return false, err
		}
		if binary.LittleEndian.Uint64(c.rsp) != c.seq {
			return false, fmt.Errorf("response %d to request %d", binary.LittleEndian.Uint64(c.rsp), c.seq)
		}
		return true, nil
	}
	for {
		n, err := rawRead(c.fd, c.rsp)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("receive: %w", err)
		}
		if n == len(c.rsp) && binary.LittleEndian.Uint64(c.rsp) == c.seq {
			return true, nil
		}
	}
}

// Run makes transactions for opts.Duration, one at a time, and records each
// round trip. It allocates nothing per transaction.
func (c *RRClient) Run(ctx context.Context) (RRResult, error) {
	var (
		timeouts int64
		pace     yielder
	)
	done := ctx.Done()
	start := time.Now()
	now := time.Since(start) // monotonic clock only
	for now < c.opts.Duration {
		select {
		case <-done:
			return RRResult{}, fmt.Errorf("rr %s client: %w", c.opts.Protocol, ctx.Err())
		default:
		}
		ok, err := c.transact()
		after := time.Since(start)
		if err != nil {
			return RRResult{}, fmt.Errorf("rr %s client to %s, after %d transactions: %w", c.opts.Protocol, c.opts.Addr, c.hist.Count(), err)
		}
		if ok {
			c.hist.Record(after - now)
		} else {
			timeouts++
		}
		now = after
		if pace.tick() {
			now = time.Since(start) // not the yield's time
		}
	}
	return c.opts.result(c.hist, timeouts, now), nil
}

// Close closes the client's socket.
func (c *RRClient) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// blockingSocket opens an IPv4 socket in blocking mode whose receives (and
// accepts) give up with EAGAIN after recvTimeout.
func blockingSocket(typ int, recvTimeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set SO_RCVTIMEO: %w", err)
	}
	return fd, nil
}

// tuneTCP turns off Nagle, so that each small request leaves at once, and
// sets the receive timeout.
func tuneTCP(fd int, recvTimeout time.Duration) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	tv := unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set SO_RCVTIMEO: %w", err)
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := rawWrite(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readFull fills b from a TCP socket.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := rawRead(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return fmt.Errorf("%w within %s", errNoResponse, rrStall)
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		case n == 0:
			return errors.New("receive: the server closed the connection")
		}
		b = b[n:]
	}
	return nil
}

// The socket calls of a transaction are raw system calls (RawSyscall), made
// as a C program makes them: the thread sleeps in the kernel and keeps its
// P. Through syscall.Syscall the runtime would count the thread as blocked,
// and sysmon hands its P to another thread (a futex wake-up) that finds
// nothing to do and sleeps again: about four context switches per
// transaction instead of one, measured with perf sched. On a machine whose
// cores carry the whole path that tax lands on the path being measured.
// Every socket here has a receive timeout, so a signal (sysmon's
// preemption) ends a wait with EINTR, which each loop retries, and each
// loop yields (yielder) before sysmon would need one. A goroutine waiting
// in one of these calls holds a P: give the process a P per loop
// (RRProcs).

// RRProcs is the GOMAXPROCS an rr server or client process needs: a P for
// each loop that waits in a raw system call (the UDP loop, the accept
// loop, a few TCP connections), so that none waits for another's P.
const RRProcs = 8

func rawRead(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// recvfrom and sendto skip x/sys/unix's Sockaddr conversion, which
// allocates for every datagram.
func recvfrom(fd int, b []byte, from *unix.RawSockaddrAny, fromLen *uint32) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		0, uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(fromLen)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sendto(fd int, b []byte, to *unix.RawSockaddrAny, toLen uint32) error {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		0, uintptr(unsafe.Pointer(to)), uintptr(toLen))
	if e != 0 {
		return e
	}
	return nil
}

// yielder lets a loop of raw system calls pass through the scheduler every
// few milliseconds, before sysmon would preempt it with a signal
// (forcePreemptNS, 10 ms) that could land in a timed wait.
type yielder struct{ last time.Time }

// tick reports whether it yielded.
func (y *yielder) tick() bool {
	now := time.Now()
	if now.Sub(y.last) < 5*time.Millisecond {
		return false
	}
	y.last = now
	runtime.Gosched()
	return true
}
