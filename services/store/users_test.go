package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestUsers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if err := s.EnsureUser(ctx, nil, "admin", "admin"); err != nil {
		t.Fatal(err)
	}
	// Exists already: the password is not reset.
	if err := s.EnsureUser(ctx, nil, "admin", "other"); err != nil {
		t.Fatal(err)
	}
	seq := s.Position().Seq

	tests := []struct {
		user, password string
		want           error
	}{
		{"admin", "admin", nil},
		{"admin", "other", ErrBadCredentials},
		{"admin", "", ErrBadCredentials},
		{"nobody", "admin", ErrBadCredentials},
		{"bad name!", "admin", ErrBadCredentials},
	}
	for _, tt := range tests {
		if err := s.Authenticate(ctx, tt.user, tt.password); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tt.user, tt.password, err, tt.want)
		}
	}
	if s.Position().Seq != seq {
		t.Fatal("the second EnsureUser or Authenticate changed the database")
	}

	if err := s.SetPassword(ctx, nil, "admin", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := s.Authenticate(ctx, "admin", "admin"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password: %v", err)
	}
	if err := s.Authenticate(ctx, "admin", "s3cret"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := s.SetPassword(ctx, nil, "nobody", "x"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("SetPassword of an unknown user: %v", err)
	}
	if string(get(t, s, UsersBucket, "admin")) == "s3cret" {
		t.Fatal("password stored in clear")
	}
}

func TestUsersRefuseBadInput(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	tests := []struct{ name, user, password string }{
		{"empty user", "", "pw"},
		{"user with space", "a b", "pw"},
		{"long user", strings.Repeat("u", maxUserLen+1), "pw"},
		{"empty password", "admin", ""},
		{"long password", "admin", strings.Repeat("p", maxPasswordLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.EnsureUser(ctx, nil, tt.user, tt.password); !errors.Is(err, errInvalid) {
				t.Fatalf("err %v, want invalid", err)
			}
			if s.Position().Seq != 0 {
				t.Fatal("a refused user was stored")
			}
		})
	}
}

func TestUsersReplicated(t *testing.T) {
	ctx := context.Background()
	primary, sec := openTest(t), newPeer(t)
	if err := primary.EnsureUser(ctx, sec.replicator(primary), "admin", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := sec.store.Authenticate(ctx, "admin", "admin"); err != nil {
		t.Fatalf("on the secondary: %v", err)
	}
}
