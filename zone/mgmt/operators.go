package mgmt

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/stores"
)

// Operator is an account of the management plane. Every operator may do
// everything the hub's own CLI does; scripts get narrower API tokens.
type Operator struct {
	Name            string    `cbor:"1,keyasint"`
	PasswordHash    string    `cbor:"2,keyasint"` // argon2id, PHC format
	Created         time.Time `cbor:"3,keyasint"`
	PasswordChanged time.Time `cbor:"4,keyasint"`
	// TOTPSecret is the confirmed second factor (base32), if any;
	// PendingTOTP one enrolled and not yet confirmed by a first code.
	TOTPSecret   string    `cbor:"5,keyasint,omitempty"`
	PendingTOTP  string    `cbor:"6,keyasint,omitempty"`
	TOTPLastStep int64     `cbor:"7,keyasint,omitempty"` // no code of this step or before is taken again
	MFAEnrolled  time.Time `cbor:"8,keyasint,omitempty"`
	Recovery     []string  `cbor:"9,keyasint,omitempty"` // hashes of the unused recovery codes
}

// OperatorView is what lists show of an operator.
type OperatorView struct {
	Name            string    `json:"name"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
	MFA             bool      `json:"mfa"`
	MFAEnrolled     time.Time `json:"mfa_enrolled,omitzero"`
	RecoveryLeft    int       `json:"recovery_codes_left"`
	Sessions        int       `json:"sessions"`
}

// Enrolment is a TOTP secret to confirm with a first code.
type Enrolment struct {
	Operator string `json:"operator"`
	Secret   string `json:"secret"` // base32, for typing into an app
	URI      string `json:"uri"`    // otpauth://, for a QR code
}

func (m *Manager) getOperator(tx kv.Tx, name string) (*Operator, error) {
	var op Operator
	err := stores.GetCBOR(tx.Bucket(bucketOperators), []byte(name), &op)
	if errors.Is(err, stores.ErrNotFound) {
		return nil, fmt.Errorf("%w %q (pzh operator list)", ErrNoOperator, name)
	}
	return &op, err
}

// editOperator runs change on name's record and writes it back.
func (m *Manager) editOperator(name string, change func(*Operator) error) error {
	return m.db.Update(func(tx kv.Tx) error {
		op, err := m.getOperator(tx, name)
		if err != nil {
			return err
		}
		if err := change(op); err != nil {
			return err
		}
		return stores.PutCBOR(tx.Bucket(bucketOperators), []byte(name), op)
	})
}

// hash computes a password hash, one of concurrentHashes at a time.
func (m *Manager) hash(ctx context.Context, f func()) error {
	t := time.NewTimer(hashQueueWait)
	defer t.Stop()
	select {
	case m.hashing <- struct{}{}:
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.hashing }()
	f()
	return nil
}

// newHash checks a new password and hashes it, in its turn.
func (m *Manager) newHash(ctx context.Context, password string) (string, error) {
	if err := CheckPassword(password); err != nil {
		return "", badRequest("%v", err)
	}
	var h string
	var err error
	if herr := m.hash(ctx, func() { h, err = hashPassword(password, m.cfg.Hash) }); herr != nil {
		return "", herr
	}
	return h, err
}

// AddOperator creates an operator with a password.
func (m *Manager) AddOperator(ctx context.Context, name, password string) error {
	if err := certs.ValidateName("operator", name); err != nil {
		return badRequest("%v", err)
	}
	h, err := m.newHash(ctx, password)
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	err = m.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketOperators)
		if b.Get([]byte(name)) != nil {
			return fmt.Errorf("%w: %q (pzh operator passwd %s changes its password)", ErrOperatorExists, name, name)
		}
		return stores.PutCBOR(b, []byte(name), &Operator{Name: name, PasswordHash: h, Created: now, PasswordChanged: now})
	})
	if err == nil {
		m.cfg.Logger.Info("operator added", "operator", name)
	}
	return err
}

// SetPassword changes an operator's password and ends its sessions.
func (m *Manager) SetPassword(ctx context.Context, name, password string) error {
	h, err := m.newHash(ctx, password)
	if err != nil {
		return err
	}
	err = m.editOperator(name, func(op *Operator) error {
		op.PasswordHash, op.PasswordChanged = h, m.cfg.Now()
		return nil
	})
	if err != nil {
		return err
	}
	m.endOperator(name, "the operator's password changed")
	m.cfg.Logger.Info("operator password changed", "operator", name)
	return nil
}

// RemoveOperator removes an operator and ends its sessions.
func (m *Manager) RemoveOperator(name string) error {
	err := m.db.Update(func(tx kv.Tx) error {
		if _, err := m.getOperator(tx, name); err != nil {
			return err
		}
		return tx.Bucket(bucketOperators).Delete([]byte(name))
	})
	if err != nil {
		return err
	}
	m.endOperator(name, "the operator was removed")
	m.cfg.Logger.Info("operator removed", "operator", name)
	return nil
}

// Operators lists the operators by name.
func (m *Manager) Operators() ([]OperatorView, error) {
	var out []OperatorView
	err := m.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucketOperators).ForEach(func(k, _ []byte) error {
			var op Operator
			if err := stores.GetCBOR(tx.Bucket(bucketOperators), k, &op); err != nil {
				return err
			}
			out = append(out, OperatorView{Name: op.Name, Created: op.Created, PasswordChanged: op.PasswordChanged,
				MFA: op.TOTPSecret != "", MFAEnrolled: op.MFAEnrolled, RecoveryLeft: len(op.Recovery)})
			return nil
		})
	})
	m.mu.Lock()
	for i := range out {
		for _, s := range m.sessions {
			if s.rec.Operator == out[i].Name {
				out[i].Sessions++
			}
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// EnrollMFA starts a TOTP enrolment for name: a new secret, which counts
// once ConfirmMFA had a first code of it. An enrolment already confirmed
// is replaced only at that confirmation.
func (m *Manager) EnrollMFA(name string) (*Enrolment, error) {
	secret, uri, err := newTOTP(m.cfg.Issuer, name)
	if err != nil {
		return nil, err
	}
	err = m.editOperator(name, func(op *Operator) error {
		op.PendingTOTP = secret
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Enrolment{Operator: name, Secret: secret, URI: uri}, nil
}

// ConfirmMFA confirms name's pending enrolment with a first code and
// returns its recovery codes, shown this once. From then on a login of
// name is partial until a code is given.
func (m *Manager) ConfirmMFA(name, code string) ([]string, error) {
	codes, hashes, err := newRecoveryCodes()
	if err != nil {
		return nil, err
	}
	now := m.cfg.Now()
	err = m.editOperator(name, func(op *Operator) error {
		if op.PendingTOTP == "" {
			return badRequest("operator %q has no enrolment to confirm: start one with pzh operator mfa enroll %s", name, name)
		}
		step := checkTOTP(op.PendingTOTP, code, now, 0)
		if step == 0 {
			return fmt.Errorf("%w (check that the phone's clock is right)", ErrBadCode)
		}
		op.TOTPSecret, op.PendingTOTP, op.TOTPLastStep, op.MFAEnrolled, op.Recovery = op.PendingTOTP, "", step, now, hashes
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.cfg.Logger.Info("operator enrolled a second factor", "operator", name)
	return codes, nil
}

// DisableMFA removes name's second factor (a lost phone, with no recovery
// code left): the hub's own operator, on its host, decides.
func (m *Manager) DisableMFA(name string) error {
	err := m.editOperator(name, func(op *Operator) error {
		if op.TOTPSecret == "" && op.PendingTOTP == "" {
			return badRequest("operator %q has no second factor", name)
		}
		op.TOTPSecret, op.PendingTOTP, op.TOTPLastStep, op.Recovery, op.MFAEnrolled = "", "", 0, nil, time.Time{}
		return nil
	})
	if err == nil {
		m.cfg.Logger.Warn("operator's second factor removed", "operator", name)
	}
	return err
}
