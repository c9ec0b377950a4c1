package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // pure-Go SQLite driver "sqlite": no cgo
)

// User is a person who signs in to the demo with a session token.
type User struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
	Name     string `json:"name"`
}

// Widget is the model whose quantity the page shows live.
type Widget struct {
	ID         int64   `json:"id"`
	Name       string  `json:"name"`
	OwnerID    int64   `json:"-"`
	Owner      string  `json:"owner"`
	Visibility string  `json:"visibility"` // "public" or "private"
	Quantity   int     `json:"quantity"`
	SharedWith []int64 `json:"-"` // users who may see a private widget besides its owner
}

// VisibleTo reports whether u may see w: every signed-in user sees public
// widgets; a private one is seen by its owner and whom it is shared with.
func (w Widget) VisibleTo(u User) bool {
	return w.Visibility == "public" || w.OwnerID == u.ID || slices.Contains(w.SharedWith, u.ID)
}

// QuantityChange is a change asked for through the API: a new quantity
// (Set) or an amount to add (Delta, may be negative).
type QuantityChange struct {
	Set   *int
	Delta int
}

// AfterSaveFunc runs once a widget's quantity change is committed, like
// the after_save hook of the myxi 1.x README.
type AfterSaveFunc func(ctx context.Context, before, after Widget) error

// ErrNotFound: no widget with that id.
var ErrNotFound = errors.New("no such widget")

// ErrNegativeQuantity: a quantity cannot go below zero.
var ErrNegativeQuantity = errors.New("a quantity cannot be negative")

// AfterSaveError says the change was saved but an after-save hook (the
// push to the subscribers) failed.
type AfterSaveError struct{ Err error }

func (e *AfterSaveError) Error() string { return "saved, but after save: " + e.Err.Error() }
func (e *AfterSaveError) Unwrap() error { return e.Err }

// Store keeps users, their session tokens and widgets in SQLite. Several
// demo nodes may open the same file at once: WAL lets readers and a writer
// work together, busy_timeout makes a writer wait for another process's
// write instead of failing, and immediate transactions take the write lock
// up front so that two read-then-write transactions cannot deadlock.
type Store struct {
	db *sql.DB

	mu        sync.RWMutex
	afterSave []AfterSaveFunc
}

// OpenStore opens (creating if needed) the database at path and makes sure
// the demo's users and widgets are in it.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// AfterSave registers fn to run after every committed quantity change.
func (s *Store) AfterSave(fn AfterSaveFunc) {
	s.mu.Lock()
	s.afterSave = append(s.afterSave, fn)
	s.mu.Unlock()
}

const schema = `
CREATE TABLE IF NOT EXISTS users (
	id       INTEGER PRIMARY KEY,
	username TEXT NOT NULL UNIQUE,
	name     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_sessions (
	token   TEXT PRIMARY KEY,
	user_id INTEGER NOT NULL REFERENCES users(id)
);
CREATE TABLE IF NOT EXISTS widgets (
	id         INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	owner_id   INTEGER NOT NULL REFERENCES users(id),
	visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
	quantity   INTEGER NOT NULL CHECK (quantity >= 0)
);
CREATE TABLE IF NOT EXISTS widget_shares (
	widget_id INTEGER NOT NULL REFERENCES widgets(id),
	user_id   INTEGER NOT NULL REFERENCES users(id),
	PRIMARY KEY (widget_id, user_id)
);`

// migrate creates the tables and inserts the seed rows that are missing.
// INSERT OR IGNORE keeps the quantities a previous run left, and lets
// nodes that start together seed the same file without conflict.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return err
	}
	for _, u := range seedUsers {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO users (id, username, name) VALUES (?, ?, ?)`, u.ID, u.Username, u.Name); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO user_sessions (token, user_id) VALUES (?, ?)`, u.Token, u.ID); err != nil {
			return err
		}
	}
	for _, w := range seedWidgets {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO widgets (id, name, owner_id, visibility, quantity) VALUES (?, ?, ?, ?, ?)`,
			w.ID, w.Name, w.OwnerID, w.Visibility, w.Quantity); err != nil {
			return err
		}
		for _, uid := range w.SharedWith {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO widget_shares (widget_id, user_id) VALUES (?, ?)`, w.ID, uid); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// UserByToken finds the user of a session token (the README's
// UserSession.find_by_token).
func (s *Store) UserByToken(ctx context.Context, token string) (User, bool, error) {
	var u User
	err := s.db.QueryRowContext(ctx, `
		SELECT u.id, u.username, u.name FROM user_sessions t JOIN users u ON u.id = t.user_id
		WHERE t.token = ?`, token).Scan(&u.ID, &u.Username, &u.Name)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, false, nil
	}
	return u, err == nil, err
}

// widgetColumns is what scanWidget reads: the widget, its owner's name and
// the ids it is shared with as "2,3".
const widgetColumns = `w.id, w.name, w.owner_id, u.username, w.visibility, w.quantity,
	COALESCE((SELECT group_concat(user_id) FROM widget_shares WHERE widget_id = w.id), '')
	FROM widgets w JOIN users u ON u.id = w.owner_id`

type scanner interface{ Scan(dest ...any) error }

func scanWidget(row scanner) (Widget, error) {
	var w Widget
	var shared string
	if err := row.Scan(&w.ID, &w.Name, &w.OwnerID, &w.Owner, &w.Visibility, &w.Quantity, &shared); err != nil {
		return Widget{}, err
	}
	for _, id := range strings.Split(shared, ",") {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			w.SharedWith = append(w.SharedWith, n)
		}
	}
	return w, nil
}

// Widget loads one widget.
func (s *Store) Widget(ctx context.Context, id int64) (Widget, bool, error) {
	w, err := scanWidget(s.db.QueryRowContext(ctx, `SELECT `+widgetColumns+` WHERE w.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Widget{}, false, nil
	}
	return w, err == nil, err
}

// Widgets loads every widget, by id.
func (s *Store) Widgets(ctx context.Context) ([]Widget, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+widgetColumns+` ORDER BY w.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []Widget
	for rows.Next() {
		w, err := scanWidget(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, w)
	}
	return list, rows.Err()
}

// ChangeQuantity saves a quantity change and then, when the quantity did
// change, runs the after-save hooks. A hook's failure is returned as an
// *AfterSaveError along with the saved widget.
func (s *Store) ChangeQuantity(ctx context.Context, id int64, change QuantityChange) (Widget, error) {
	before, after, err := s.saveQuantity(ctx, id, change)
	if err != nil || before.Quantity == after.Quantity {
		return after, err
	}
	s.mu.RLock()
	hooks := slices.Clone(s.afterSave)
	s.mu.RUnlock()
	var errs []error
	for _, fn := range hooks {
		if err := fn(ctx, before, after); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return after, &AfterSaveError{Err: errors.Join(errs...)}
	}
	return after, nil
}

func (s *Store) saveQuantity(ctx context.Context, id int64, change QuantityChange) (before, after Widget, err error) {
	tx, err := s.db.BeginTx(ctx, nil) // immediate: holds the write lock from here
	if err != nil {
		return before, after, err
	}
	defer tx.Rollback()
	before, err = scanWidget(tx.QueryRowContext(ctx, `SELECT `+widgetColumns+` WHERE w.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return before, after, ErrNotFound
	}
	if err != nil {
		return before, after, err
	}
	after = before
	after.Quantity += change.Delta
	if change.Set != nil {
		after.Quantity = *change.Set
	}
	if after.Quantity < 0 {
		return before, before, ErrNegativeQuantity
	}
	if after.Quantity == before.Quantity {
		return before, after, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE widgets SET quantity = ? WHERE id = ?`, after.Quantity, id); err != nil {
		return before, after, err
	}
	return before, after, tx.Commit()
}
