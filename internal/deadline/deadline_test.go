package deadline

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

type tag struct{}

func TestDoneFiresAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent := context.WithValue(context.Background(), tag{}, "v")
		c := With(parent, time.Second)
		if d, ok := c.Deadline(); !ok || !d.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("deadline %v %v", d, ok)
		}
		if c.Value(tag{}) != "v" {
			t.Fatal("the parent's values are lost")
		}
		if err := c.Err(); err != nil {
			t.Fatalf("err before the deadline: %v", err)
		}
		start := time.Now()
		<-c.Done()
		if waited := time.Since(start); waited != time.Second {
			t.Fatalf("done after %v, want 1s", waited)
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v", c.Err())
		}
	})
}

func TestErrReportsAPassedDeadlineUnarmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := With(context.Background(), time.Second)
		time.Sleep(time.Second)
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v, want the deadline", c.Err())
		}
		if _, ok := Unarmed(c); !ok {
			t.Fatal("Err armed the timer")
		}
	})
}

func TestParentsEarlierDeadlineWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c := With(parent, time.Hour)
		if d, _ := c.Deadline(); !d.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("deadline %v, want the parent's", d)
		}
	})
}

func TestParentCancellationReachesBothWays(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := With(parent, time.Hour)
	p, ok := Unarmed(context.WithValue(c, tag{}, 1))
	if !ok || p != parent {
		t.Fatalf("Unarmed: %v %v", p, ok)
	}
	cancel()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("unarmed err %v", c.Err())
	}
	<-c.Done() // armed after the parent ended: closed at once
	if _, ok := Unarmed(c); ok {
		t.Fatal("Unarmed after Done")
	}
}

func TestReleaseCancels(t *testing.T) {
	c := With(context.Background(), time.Hour)
	c.Release()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("released, unarmed: err %v", c.Err())
	}
	<-c.Done()
	armed := With(context.Background(), time.Hour)
	done := armed.Done()
	armed.Release()
	<-done
	if !errors.Is(armed.Err(), context.Canceled) {
		t.Fatalf("released, armed: err %v", armed.Err())
	}
}

func TestUnarmedIgnoresOtherContexts(t *testing.T) {
	if _, ok := Unarmed(context.Background()); ok {
		t.Fatal("Unarmed on a plain context")
	}
}
