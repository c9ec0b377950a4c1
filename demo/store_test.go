package main

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func openTestStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The README's table of who sees which widget comes from the seed data:
// this keeps the two in step.
func TestSeedVisibility(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "w.db"))
	ctx := context.Background()
	want := map[string][]int64{
		"alice-token": {1, 2, 3, 5},
		"bob-token":   {1, 3, 4},
		"carol-token": {1, 3, 5, 6},
	}
	widgets, err := s.Widgets(ctx)
	if err != nil || len(widgets) != 6 {
		t.Fatalf("Widgets: %d, %v", len(widgets), err)
	}
	for token, ids := range want {
		u, found, err := s.UserByToken(ctx, token)
		if err != nil || !found {
			t.Fatalf("UserByToken(%q): %v %v", token, found, err)
		}
		var seen []int64
		for _, w := range widgets {
			if w.VisibleTo(u) {
				seen = append(seen, w.ID)
			}
		}
		if !slices.Equal(seen, ids) {
			t.Errorf("%s sees %v, want %v", u.Username, seen, ids)
		}
	}
	if _, found, _ := s.UserByToken(ctx, "nope"); found {
		t.Error("an unknown token found a user")
	}
}

func TestChangeQuantityRunsAfterSaveHooks(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "w.db"))
	ctx := context.Background()
	var saved [][2]int
	s.AfterSave(func(ctx context.Context, before, after Widget) error {
		saved = append(saved, [2]int{before.Quantity, after.Quantity})
		return nil
	})
	five := 5
	steps := []struct {
		change QuantityChange
		want   int
		err    error
	}{
		{QuantityChange{Delta: 1}, 13, nil},
		{QuantityChange{Set: &five}, 5, nil},
		{QuantityChange{Set: &five}, 5, nil},                // unchanged: no hook
		{QuantityChange{Delta: -6}, 5, ErrNegativeQuantity}, // refused, nothing saved
	}
	for i, step := range steps {
		w, err := s.ChangeQuantity(ctx, 1, step.change)
		if !errors.Is(err, step.err) || w.Quantity != step.want {
			t.Fatalf("step %d: quantity %d, err %v; want %d, %v", i, w.Quantity, err, step.want, step.err)
		}
	}
	if want := [][2]int{{12, 13}, {13, 5}}; !slices.Equal(saved, want) {
		t.Errorf("hooks saw %v, want %v", saved, want)
	}
	if _, err := s.ChangeQuantity(ctx, 99, QuantityChange{Delta: 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown widget: %v", err)
	}

	s.AfterSave(func(context.Context, Widget, Widget) error { return errors.New("broker down") })
	w, err := s.ChangeQuantity(ctx, 1, QuantityChange{Delta: 1})
	var hookErr *AfterSaveError
	if !errors.As(err, &hookErr) || w.Quantity != 6 {
		t.Fatalf("failing hook: %v, quantity %d", err, w.Quantity)
	}
	if got, _, _ := s.Widget(ctx, 1); got.Quantity != 6 {
		t.Errorf("the change was not kept after a failing hook: %d", got.Quantity)
	}
}

// Several demo nodes share one file: concurrent changes from two stores
// (two processes' worth of connections) all land, none is lost or refused.
func TestStoresShareOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	stores := []*Store{openTestStore(t, path), openTestStore(t, path)}
	ctx := context.Background()
	const perWorker = 25
	var wg sync.WaitGroup
	errs := make(chan error, 4*perWorker)
	for i := range 4 {
		wg.Go(func() {
			for range perWorker {
				if _, err := stores[i%2].ChangeQuantity(ctx, 3, QuantityChange{Delta: 1}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	w, _, err := stores[1].Widget(ctx, 3)
	if err != nil || w.Quantity != 3+4*perWorker {
		t.Fatalf("quantity %d (%v), want %d", w.Quantity, err, 3+4*perWorker)
	}
}
