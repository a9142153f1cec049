package qmp

import (
	"context"
	"io"
	"net"
	"testing"
)

// A command whose context ends right as it is written must not leave the
// connection unable to write the next one.
func TestWriteAfterCancelledCommand(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go io.Copy(io.Discard, b)
	c := &Client{conn: a}
	for i := range 300 {
		ctx, cancel := context.WithCancel(context.Background())
		go cancel() // races with the write
		c.write(ctx, []byte("{}\n"))
		if err := c.write(context.Background(), []byte("{}\n")); err != nil {
			t.Fatalf("round %d: write after a cancelled one: %v", i, err)
		}
	}
}
