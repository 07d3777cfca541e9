// Package ringbuf provides the packet buffers of overlayd's data path:
// fixed-size buffers whose callers leave headroom in front of each packet,
// so a TUN read at offset headroom can have its encapsulation header
// written in place before it, and a received datagram can be decapsulated
// by re-slicing.
//
// A Batch is the vector one worker goroutine reads into and writes from,
// carved from a single slab and reused for every batch, so the data path
// allocates nothing in the steady state. Buffers never pass between
// goroutines, which is why there is no pool.
package ringbuf
