// Package pollwake lets a forwarding thread sleep in poll(2) on a
// descriptor, so that the kernel wakes that very thread when the descriptor
// is ready, and lets Close end the sleep for good.
//
// Closing a descriptor does not wake a thread asleep on it (the sleeper
// holds the file open), and neither a TUN queue nor a packet socket has a
// shutdown(2) that would. So the sleeper polls an eventfd too, a Waker,
// which Wake makes readable and leaves readable: it ends the waits asleep
// now and every later one, after which the owner may take its locks and
// close the descriptors. The UDP socket needs none of this: shutdown(2)
// wakes a thread asleep in its recvmmsg.
package pollwake
