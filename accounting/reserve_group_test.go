package accounting

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/config"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// groupAsks is a run of reservations that meets every path of the group
// script, with the outcome each has when made one after the other over
// groupState: budgets with room and without, a key budget of another
// period, an id reserved before the run and one twice within it, a zero
// estimate, an ask without budgets, a key budget without a team budget,
// four teams (one with one ask), and a reserved sum past 2^53.
func groupAsks() (asks []Ask, want []error) {
	team := &config.Budget{USD: 1, Period: "monthly"} // 1,000,000 micros
	k1 := &config.Budget{USD: 0.5, Period: "monthly"}
	k2 := &config.Budget{USD: 0.2, Period: "daily"}
	big := &config.Budget{USD: config.MaxBudgetUSD, Period: "total"}
	add := func(a Ask, err error) {
		asks, want = append(asks, a), append(want, err)
	}
	add(Ask{ID: "a1", Team: "t", Budget: team, Micros: 300_000}, nil)
	add(Ask{ID: "a2", Team: "t", Budget: team, Key: "k1", KeyBudget: k1, Micros: 200_000}, nil)
	add(Ask{ID: "a3", Team: "t", Budget: team, Key: "k2", KeyBudget: k2, Micros: 150_000}, nil)
	add(Ask{ID: "dup", Team: "t", Budget: team, Key: "k1", KeyBudget: k1, Micros: 50_000}, nil)
	add(Ask{ID: "a5", Team: "t", Budget: team, Key: "k1", KeyBudget: k1, Micros: 190_000}, ErrKeyBudgetExceeded)
	add(Ask{ID: "a6", Team: "t", Budget: team, Micros: 250_000}, ErrBudgetExceeded)
	add(Ask{ID: "a7", Team: "t", Budget: team, Micros: 0}, nil)
	add(Ask{ID: "a1", Team: "t", Budget: team, Micros: 10_000}, nil)
	add(Ask{ID: "a9", Team: "t", Micros: 999_999_999}, nil)
	add(Ask{ID: "a10", Team: "t", Budget: team, Micros: 20_000}, nil)
	add(Ask{ID: "a10", Team: "t", Budget: team, Micros: 5_000}, nil) // the same id again, nothing written between
	add(Ask{ID: "u1", Team: "u", Budget: team, Micros: 600_000}, nil)
	add(Ask{ID: "u2", Team: "u", Budget: team, Micros: 600_000}, ErrBudgetExceeded)
	add(Ask{ID: "s1", Team: "solo", Budget: team, Micros: 1_000}, nil) // alone in its team: not grouped
	add(Ask{ID: "a12", Team: "t", Key: "k2", KeyBudget: k2, Micros: 60_000}, ErrKeyBudgetExceeded)
	// Eleven keys of one team with budgets of their own, each holding most
	// of it: the team's reserved sum passes 2^53, where a double loses
	// units.
	for i := range 11 {
		add(Ask{ID: fmt.Sprint("big", i), Team: "big", Key: fmt.Sprint("kb", i), KeyBudget: big, Micros: 999_999_999_999_999}, nil)
	}
	return asks, want
}

// groupState gives a store what the run of groupAsks starts from: key k1
// of team t has spent, and holds a reservation under "dup".
func groupState(t *testing.T, s Store, clk *clock) {
	t.Helper()
	p := NewPricer(testConfig())
	mustApply(t, s, served(p, "spent1", clk.Now(), "k1", "t", "laozhang", 1, 1, 10, 0),
		served(p, "spent2", clk.Now(), "k1", "t", "laozhang", 1, 1, 10, 0))
	k1 := &config.Budget{USD: 0.5, Period: "monthly"}
	team := &config.Budget{USD: 1, Period: "monthly"}
	if _, err := s.Reserve(context.Background(), Ask{ID: "dup", Team: "t", Budget: team, Key: "k1", KeyBudget: k1, Micros: 100_000}); err != nil {
		t.Fatal(err)
	}
}

// TestGroupedReservationsDecideAsOneAfterTheOther: the reservations one
// pipeline carries (QueueReserves) end as the same reservations made one
// after the other: each answer, and what Redis holds after.
func TestGroupedReservationsDecideAsOneAfterTheOther(t *testing.T) {
	for name, client := range redisClients() {
		t.Run(name, func(t *testing.T) {
			c := client(t)
			ctx := context.Background()
			clk, seq, grp := twinStores(c, "seq:", "grp:")
			groupState(t, seq, clk)
			groupState(t, grp, clk)
			if err := reserveGroupScript.Load(ctx, c).Err(); err != nil {
				t.Fatal(err)
			}

			asks, want := groupAsks()
			alone := make([]Reservation, len(asks))
			for i, a := range asks {
				r, err := seq.Reserve(ctx, a)
				if !errors.Is(err, want[i]) || (want[i] == nil && err != nil) {
					t.Fatalf("alone, %s: %v, want %v", a.ID, err, want[i])
				}
				alone[i] = r
			}

			calls := make([]*ReserveCall, len(asks))
			for i := range calls {
				calls[i] = new(ReserveCall)
			}
			p := c.Pipeline()
			QueueReserves(ctx, p, grp, asks, calls)
			p.Exec(ctx)
			for i, a := range asks {
				if grouped := a.Team != "solo" && (a.Budget != nil || a.KeyBudget != nil); calls[i].grouped != grouped {
					t.Fatalf("%s: grouped %v, want %v", a.ID, calls[i].grouped, grouped)
				}
				r, err := calls[i].Result(ctx)
				if !errors.Is(err, want[i]) || (want[i] == nil && err != nil) {
					t.Errorf("grouped, %s: %v, want %v", a.ID, err, want[i])
				}
				if r != alone[i] {
					t.Errorf("%s: grouped %+v, alone %+v", a.ID, r, alone[i])
				}
			}
			for _, team := range []string{"t", "u", "solo", "big"} {
				if a, g := redisState(t, c, seq, team), redisState(t, c, grp, team); a != g {
					t.Errorf("team %s: Redis holds after the group\n%s\nand after one after the other\n%s", team, g, a)
				}
			}
		})
	}
}

// twinStores are two stores on c, under prefixes a and b, on one fixed
// clock: the same work done two ways, to compare what Redis holds after.
func twinStores(c redis.UniversalClient, a, b string) (*clock, *Redis, *Redis) {
	clk := newClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	return clk, NewRedis(c, &config.Redis{KeyPrefix: a}, Options{Now: clk.Now}),
		NewRedis(c, &config.Redis{KeyPrefix: b}, Options{Now: clk.Now})
}

// redisState is what Redis holds of team's reservations in s.
func redisState(t *testing.T, c redis.UniversalClient, s *Redis, team string) string {
	t.Helper()
	ctx := context.Background()
	k := s.resvKeys(team)
	resv, err1 := c.HGetAll(ctx, k[0]).Result()
	exp, err2 := c.ZRangeWithScores(ctx, k[1], 0, -1).Result()
	sum, err3 := c.Get(ctx, k[2]).Result()
	keys, err4 := c.HGetAll(ctx, k[3]).Result()
	if err := errors.Join(err1, err2, err4); err != nil || (err3 != nil && err3 != redis.Nil) {
		t.Fatal(err, err3)
	}
	return fmt.Sprint("resv ", resv, "\nexp ", exp, "\nsum ", sum, "\nkeys ", keys)
}

// TestGroupedReservationsWithoutTheScript: a Redis that lost its scripts
// (a restart, SCRIPT FLUSH) answers the group with NOSCRIPT; every
// reservation of the group is then made alone, and the script is loaded
// for the next groups.
func TestGroupedReservationsWithoutTheScript(t *testing.T) {
	c := newClient(t, redistest.Start(t).Addr)
	ctx := context.Background()
	s := NewRedis(c, &config.Redis{KeyPrefix: "ns:"}, Options{})
	c.ScriptFlush(ctx)
	budget := &config.Budget{USD: 1, Period: "monthly"}
	asks := []Ask{{ID: "1", Team: "t", Budget: budget, Micros: 600_000}, {ID: "2", Team: "t", Budget: budget, Micros: 600_000}}
	calls := []*ReserveCall{new(ReserveCall), new(ReserveCall)}
	p := c.Pipeline()
	QueueReserves(ctx, p, s, asks, calls)
	p.Exec(ctx)
	if _, err := calls[0].Result(ctx); err != nil {
		t.Fatalf("the first reservation: %v", err)
	}
	if _, err := calls[1].Result(ctx); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("the second reservation: %v, want the budget's refusal", err)
	}
	poll.Until(t, 10*time.Second, "the group script loaded", func() bool {
		ok, err := c.ScriptExists(ctx, reserveGroupScript.Hash()).Result()
		return err == nil && ok[0]
	})
}

// TestRecordsReleaseTheirReservationsAsOneByOne: a batch of records drops
// the reservations made under their ids with one command of each kind;
// what Redis holds after is what releasing them one by one leaves: a
// record twice in the batch releases once, a record without a
// reservation releases nothing, a reservation without a record stays, and
// a team's reserved sum past 2^53 comes out exact. Both ways share
// unreserveAll, so what they hold is also checked against what it should
// be.
func TestRecordsReleaseTheirReservationsAsOneByOne(t *testing.T) {
	for name, client := range redisClients() {
		t.Run(name, func(t *testing.T) {
			c := client(t)
			ctx := context.Background()
			clk, one, all := twinStores(c, "one:", "all:")
			team := &config.Budget{USD: 1, Period: "monthly"}
			big := &config.Budget{USD: config.MaxBudgetUSD, Period: "total"}
			asks := []Ask{
				{ID: "r1", Team: "t", Budget: team, Micros: 300_000},
				{ID: "r2", Team: "t", Budget: team, Key: "k1", KeyBudget: team, Micros: 200_000},
				{ID: "r3", Team: "t", Budget: team, Key: "k1", KeyBudget: team, Micros: 100_000},
				{ID: "kept", Team: "t", Budget: team, Key: "k1", KeyBudget: team, Micros: 50_000},
			}
			for i := range 11 {
				asks = append(asks, Ask{ID: fmt.Sprint("b", i), Team: "t", Key: fmt.Sprint("kb", i), KeyBudget: big, Micros: 999_999_999_999_999})
			}
			p := NewPricer(testConfig())
			var recs []Record
			for _, s := range []*Redis{one, all} {
				for _, a := range asks {
					r, err := s.Reserve(ctx, a)
					if err != nil {
						t.Fatalf("%s: %v", a.ID, err)
					}
					if s == one && a.ID != "kept" {
						if err := s.Release(ctx, r); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			for _, a := range asks {
				if a.ID != "kept" {
					recs = append(recs, served(p, a.ID, clk.Now(), a.Key, "t", "laozhang", 1, 1, 10, 0))
				}
			}
			recs = append(recs, recs[1], served(p, "unreserved", clk.Now(), "", "t", "laozhang", 1, 1, 10, 0))
			if _, err := all.ApplyBatch(ctx, recs); err != nil {
				t.Fatal(err)
			}
			if a, b := redisState(t, c, one, "t"), redisState(t, c, all, "t"); a != b {
				t.Errorf("Redis holds after the batch\n%s\nand after releasing one by one\n%s", b, a)
			}
			// And what both should hold: the kept reservation alone, its
			// key's sum, no key left at zero.
			expiry := float64(clk.Now().Add(DefaultReservationTTL).UnixMilli())
			want := fmt.Sprint("resv map[kept:50000|k1]\nexp [{", expiry, " kept}]\nsum 50000\nkeys map[k1:50000]")
			if got := redisState(t, c, all, "t"); got != want {
				t.Errorf("Redis holds after the batch\n%s\nwant\n%s", got, want)
			}
		})
	}
}
