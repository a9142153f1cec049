package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Error is a QMP error reply: the command reached QEMU and QEMU refused it.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string {
	return e.Class + ": " + e.Desc
}

// Event is an asynchronous QMP event such as SHUTDOWN or NIC_RX_FILTER_CHANGED.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// kind tells which of the four QMP server messages a line holds.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

// message is one decoded line sent by the QMP server.
type message struct {
	kind kind
	// id is set for kindReturn and kindError when the reply carries one.
	id    uint64
	hasID bool
	// ret is the "return" member of a successful reply.
	ret json.RawMessage
	// err is the "error" member of a failed reply.
	err *Error
	// event is set for kindEvent.
	event Event
}

type wireMessage struct {
	QMP       json.RawMessage `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// decode parses one line from the QMP server. The bytes come from another
// process, so every malformed shape is reported rather than trusted.
func decode(line []byte) (message, error) {
	var w wireMessage
	if err := json.Unmarshal(line, &w); err != nil {
		return message{}, fmt.Errorf("qmp: malformed message: %w", err)
	}
	var m message
	if len(w.ID) > 0 {
		if err := json.Unmarshal(w.ID, &m.id); err != nil {
			return message{}, fmt.Errorf("qmp: reply id %s is not one this client sends: %w", w.ID, err)
		}
		m.hasID = true
	}
	switch {
	case len(w.QMP) > 0:
		m.kind = kindGreeting
	case w.Error != nil:
		m.kind = kindError
		m.err = w.Error
	case len(w.Return) > 0:
		m.kind = kindReturn
		m.ret = w.Return
	case w.Event != "":
		m.kind = kindEvent
		m.event = Event{Name: w.Event, Data: w.Data}
		if w.Timestamp != nil && w.Timestamp.Seconds >= 0 && w.Timestamp.Microseconds >= 0 {
			m.event.Time = time.Unix(w.Timestamp.Seconds, w.Timestamp.Microseconds*int64(time.Microsecond))
		}
	default:
		return message{}, errors.New("qmp: message is neither greeting, reply nor event")
	}
	return m, nil
}
