package traffic

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// TransferResult is the outcome of one [Transfer].
type TransferResult struct {
	Bytes    int64         // bytes received
	Duration time.Duration // from the first byte sent to the last byte received
	// Identical reports that exactly the bytes sent arrived: the same count
	// and the same SHA-256.
	Identical bool
	SentSHA   [32]byte
	RecvSHA   [32]byte
}

// Gbps is the transfer's goodput.
func (r TransferResult) Gbps() float64 { return Gbps(r.Bytes, r.Duration) }

// streamSeed fixes the transfer stream: every Transfer of n bytes sends the
// same bytes, so a failure can be reproduced.
var streamSeed = [32]byte{'o', 'v', 'e', 'r', 'l', 'a', 'y', 'd'}

// chunkSize is how much is generated, hashed and written per call.
const chunkSize = 128 << 10

// Transfer sends n bytes of a deterministic pseudo-random stream over one TCP
// connection, dialled from inside src to dstAddr:port on a listener opened
// inside dst (port 0 picks a free one), and checks what arrives against what
// was sent. Both ends run in this process. The stream generator and the two
// hashes cost CPU, so on a small machine the result is a floor for the
// path's throughput, not its ceiling.
//
// A mismatch is not an error: it is reported as Identical false. Errors are
// for a transfer that could not run to the end.
func Transfer(ctx context.Context, src, dst *netns.NS, dstAddr netip.Addr, port int, n int64) (TransferResult, error) {
	switch {
	case src == nil || dst == nil:
		return TransferResult{}, errors.New("transfer: no namespace")
	case !dstAddr.IsValid():
		return TransferResult{}, errors.New("transfer: no destination address")
	case port < 0 || port > 65535:
		return TransferResult{}, fmt.Errorf("transfer: port %d out of range", port)
	case n < 0:
		return TransferResult{}, fmt.Errorf("transfer: negative size %d", n)
	}
	ln, err := dst.Listen("tcp", netip.AddrPortFrom(dstAddr, uint16(port)).String())
	if err != nil {
		return TransferResult{}, fmt.Errorf("transfer: %w", err)
	}
	defer ln.Close()

	// The handshake completes in the listener's backlog, before Accept.
	conn, err := src.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return TransferResult{}, fmt.Errorf("transfer: %w", err)
	}
	defer conn.Close()
	received := make(chan receipt, 1)
	go func() {
		r := receive(ln)
		if r.err != nil {
			conn.Close() // unblock the sender
		}
		received <- r
	}()
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		conn.Close()
	})
	defer stop()

	start := time.Now()
	sentSHA, sendErr := send(conn, n)
	if sendErr == nil {
		sendErr = conn.(*net.TCPConn).CloseWrite()
	}
	if sendErr != nil {
		conn.Close() // let the receiver see the end
	}
	rcpt := <-received

	res := TransferResult{
		Bytes:    rcpt.bytes,
		Duration: rcpt.end.Sub(start),
		SentSHA:  sentSHA,
		RecvSHA:  rcpt.sum,
	}
	res.Identical = rcpt.bytes == n && res.SentSHA == res.RecvSHA
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("transfer: %w", err)
	}
	if sendErr != nil {
		sendErr = fmt.Errorf("send: %w", sendErr)
	}
	if rcpt.err != nil {
		rcpt.err = fmt.Errorf("receive: %w", rcpt.err)
	}
	if err := errors.Join(sendErr, rcpt.err); err != nil {
		return res, fmt.Errorf("transfer %s to %s: %w", src.Name, ln.Addr(), err)
	}
	return res, nil
}

// receipt is what the receiving end saw.
type receipt struct {
	bytes int64
	sum   [32]byte
	end   time.Time
	err   error
}

// receive accepts one connection on ln and hashes everything it carries.
func receive(ln net.Listener) receipt {
	conn, err := ln.Accept()
	if err != nil {
		return receipt{err: err, end: time.Now()}
	}
	defer conn.Close()
	ln.Close() // one connection only

	h := sha256.New()
	buf := make([]byte, chunkSize)
	var r receipt
	for {
		m, err := conn.Read(buf)
		h.Write(buf[:m])
		r.bytes += int64(m)
		if err != nil {
			r.end = time.Now()
			if !errors.Is(err, io.EOF) {
				r.err = err
			}
			break
		}
	}
	h.Sum(r.sum[:0])
	return r
}

// send writes n bytes of the transfer stream to w and returns their SHA-256.
// It allocates the same few buffers whatever n is.
func send(w io.Writer, n int64) (sum [32]byte, err error) {
	gen := rand.NewChaCha8(streamSeed)
	h := sha256.New()
	buf := make([]byte, chunkSize)
	for left := n; left > 0; {
		chunk := buf[:min(left, int64(len(buf)))]
		gen.Read(chunk) // never fails
		h.Write(chunk)
		if _, err = w.Write(chunk); err != nil {
			break
		}
		left -= int64(len(chunk))
	}
	h.Sum(sum[:0])
	return sum, err
}
