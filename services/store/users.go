package store

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// UsersBucket holds the console users: key user name, value bcrypt hash.
const UsersBucket = "users"

// ErrBadCredentials is the one answer for an unknown user and a wrong
// password, so a caller cannot tell which user names exist.
var ErrBadCredentials = errors.New("unknown user or wrong password")

const (
	maxUserLen     = 64
	maxPasswordLen = 72 // bcrypt ignores anything longer
)

func validUser(user string) error {
	if user == "" || len(user) > maxUserLen {
		return fmt.Errorf("%w: user name must have 1 to %d characters", errInvalid, maxUserLen)
	}
	for _, c := range user {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@'
		if !ok {
			return fmt.Errorf("%w: user name %q may only contain letters, digits and . _ - @", errInvalid, user)
		}
	}
	return nil
}

func (s *Store) hashPassword(password string) ([]byte, error) {
	if password == "" || len(password) > maxPasswordLen {
		return nil, fmt.Errorf("%w: password must have 1 to %d bytes", errInvalid, maxPasswordLen)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), s.bcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// dummyPasswordHash is compared against when the user does not exist, so an
// unknown user costs as much time as a wrong password.
func dummyPasswordHash(cost int) []byte {
	h, err := bcrypt.GenerateFromPassword([]byte("dyad: no such user"), cost)
	if err != nil {
		panic(fmt.Sprintf("bcrypt of a constant password failed: %v", err))
	}
	return h
}

// EnsureUser creates the user with the password unless the user exists
// (whatever its password).
func (s *Store) EnsureUser(ctx context.Context, rep Replicator, user, password string) error {
	if err := validUser(user); err != nil {
		return err
	}
	var exists bool
	if err := s.View(func(r Reader) error {
		exists = r.Get(UsersBucket, user) != nil
		return nil
	}); err != nil {
		return err
	}
	if exists {
		return nil
	}
	// Hash outside the write transaction: bcrypt is deliberately slow.
	h, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	return s.Update(ctx, rep, func(w Writer) error {
		if w.Get(UsersBucket, user) != nil {
			return nil
		}
		return w.Put(UsersBucket, user, h)
	})
}

// SetPassword changes the password of an existing user.
func (s *Store) SetPassword(ctx context.Context, rep Replicator, user, password string) error {
	if err := validUser(user); err != nil {
		return err
	}
	h, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	return s.Update(ctx, rep, func(w Writer) error {
		if w.Get(UsersBucket, user) == nil {
			return fmt.Errorf("set password: user %q does not exist", user)
		}
		return w.Put(UsersBucket, user, h)
	})
}

// Authenticate returns nil if the password is the user's, ErrBadCredentials if
// the user is unknown or the password wrong.
func (s *Store) Authenticate(ctx context.Context, user, password string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var h []byte
	if err := s.View(func(r Reader) error {
		if validUser(user) == nil {
			h = r.Get(UsersBucket, user)
		}
		return nil
	}); err != nil {
		return err
	}
	if h == nil {
		bcrypt.CompareHashAndPassword(s.dummyHash(), []byte(password))
		return ErrBadCredentials
	}
	if err := bcrypt.CompareHashAndPassword(h, []byte(password)); err != nil {
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return ErrBadCredentials
		}
		return fmt.Errorf("authenticate %q: stored password hash unusable: %w", user, err)
	}
	return nil
}
