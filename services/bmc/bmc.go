// Package bmc controls the power of a PM through its baseboard management
// controller (BMC) with IPMI 2.0 over LAN (RMCP+).
//
// Every call opens a session, sends one command and closes the session, so
// that nothing is held open to a BMC between calls: BMCs have few session
// slots, and a fencing decision must not depend on a session opened long
// before. The IPMI protocol itself is github.com/bougou/go-ipmi.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// DefaultPort is the UDP port of IPMI over LAN (RMCP).
const DefaultPort = 623

// Limits of IPMI 2.0 (user name 16 bytes, password 20 bytes).
const (
	maxUser     = 16
	maxPassword = 20
	maxHost     = 253
)

// closeTimeout bounds the Close Session that ends every call: the command
// has taken effect by then, and a session the BMC never hears closed times
// out on the BMC by itself.
const closeTimeout = 2 * time.Second

// Errors a call can be tested for with errors.Is.
var (
	// ErrAuth: the BMC refused the user, the password or the privilege
	// (operator) that power control needs.
	ErrAuth = errors.New("authentication failed")
	// ErrNoAnswer: the BMC did not answer, refused the port, or the
	// context ended first.
	ErrNoAnswer = errors.New("no answer")
)

// Config says how to reach a BMC.
type Config struct {
	Addr     string // host or host:port; the port defaults to 623
	User     string
	Password string
}

// Validate checks the config without contacting the BMC.
func (c Config) Validate() error {
	if _, _, err := c.target(); err != nil {
		return fmt.Errorf("bmc %q: %w", c.Addr, err)
	}
	return nil
}

// target splits Addr and checks every field.
func (c Config) target() (host string, port int, err error) {
	host, port, err = splitAddr(c.Addr)
	if err != nil {
		return "", 0, err
	}
	if err := checkCredentials(c.User, c.Password); err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func splitAddr(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, errors.New("address is empty")
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the whole address is the host, unless it has colons.
		if strings.Contains(addr, ":") {
			if ip := net.ParseIP(addr); ip != nil {
				return "", 0, errors.New("IPv6 BMC addresses are not supported")
			}
			return "", 0, fmt.Errorf("invalid address: %w", err)
		}
		host, portStr = addr, strconv.Itoa(DefaultPort)
	}
	if host == "" {
		return "", 0, errors.New("address has no host")
	}
	// The IPMI library joins host and port without brackets.
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return "", 0, errors.New("IPv6 BMC addresses are not supported")
	}
	if len(host) > maxHost {
		return "", 0, fmt.Errorf("host is %d bytes long, at most %d", len(host), maxHost)
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return "", 0, fmt.Errorf("host %q: character %q is not allowed", host, r)
		}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 1 to 65535", portStr)
	}
	return host, port, nil
}

func checkCredentials(user, password string) error {
	switch {
	case user == "":
		return errors.New("user is empty")
	case len(user) > maxUser:
		return fmt.Errorf("user is %d bytes long, IPMI allows at most %d", len(user), maxUser)
	case !printable(user):
		return errors.New("user has characters other than printable ASCII")
	case password == "":
		// A BMC that takes an empty password lets anyone on its network
		// power the PM off: refuse to depend on one.
		return errors.New("password is empty")
	case len(password) > maxPassword:
		return fmt.Errorf("password is %d bytes long, IPMI 2.0 allows at most %d", len(password), maxPassword)
	case !printable(password):
		return errors.New("password has characters other than printable ASCII")
	}
	return nil
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// PowerStatus reports whether the chassis is powered on.
func PowerStatus(ctx context.Context, c Config) (on bool, err error) {
	err = run(ctx, c, "power status", func(ctx context.Context, cl *client.Client) error {
		st, err := cl.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		on = st.PowerIsOn
		return nil
	})
	return on, err
}

// PowerOn powers the chassis on. A BMC acknowledges the command before the
// power state changes: poll PowerStatus to see it happen.
func PowerOn(ctx context.Context, c Config) error {
	return control(ctx, c, "power on", chassis.ChassisControlPowerUp)
}

// PowerOff cuts the power at once; the operating system gets no say.
func PowerOff(ctx context.Context, c Config) error {
	return control(ctx, c, "power off", chassis.ChassisControlPowerDown)
}

// SoftOff asks the operating system to shut down (an ACPI power button
// press); whether and when it does is for the system to decide.
func SoftOff(ctx context.Context, c Config) error {
	return control(ctx, c, "soft off", chassis.ChassisControlSoftShutdown)
}

// Reset resets the chassis (a hard reset, without powering it off).
func Reset(ctx context.Context, c Config) error {
	return control(ctx, c, "reset", chassis.ChassisControlHardReset)
}

func control(ctx context.Context, c Config, op string, cc chassis.ChassisControl) error {
	return run(ctx, c, op, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.ChassisControl(ctx, cc)
		return err
	})
}

// run opens a session with the BMC, calls f and closes the session.
func run(ctx context.Context, c Config, op string, f func(context.Context, *client.Client) error) error {
	host, port, err := c.target()
	if err != nil {
		return fmt.Errorf("bmc %q: %s: %w", c.Addr, op, err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	cl, err := connect(ctx, host, port, c.User, c.Password)
	if err != nil {
		return newError(ctx, addr, op, true, err)
	}
	opErr := f(ctx, cl)
	closeSession(ctx, cl)
	if opErr != nil {
		return newError(ctx, addr, op, false, opErr)
	}
	return nil
}

// connect opens an RMCP+ session at operator privilege, the least that
// chassis control needs. It offers cipher suite 17 (HMAC-SHA256,
// AES-CBC-128) and then 3 (HMAC-SHA1, AES-CBC-128, which nearly every BMC
// has), each on its own and no weaker one:
// the library's discovery of the BMC's suites costs seconds against BMCs
// without Get Channel Cipher Suites (ipmi_sim), and offering the next suite
// after a refused password would count as another failed login against
// BMCs that lock accounts out.
func connect(ctx context.Context, host string, port int, user, password string) (*client.Client, error) {
	var errs []error
	for _, suite := range []types.CipherSuiteID{types.CipherSuiteID17, types.CipherSuiteID3} {
		cl, err := client.NewClient(host, port, user, password)
		if err != nil {
			return nil, err
		}
		cl.WithCipherSuiteID(suite)
		cl.WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
		err = cl.Connect(ctx)
		if err == nil {
			return cl, nil
		}
		closeSocket(cl)
		err = fmt.Errorf("cipher suite %d: %w", suite, err)
		if classify(ctx, true, err) != nil {
			// A refused login or a silent BMC: the next suite cannot fare
			// better, and a suite the BMC lacks is beside the point.
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// closeSocket releases a client whose session never opened: with its
// context already done, Close sends nothing and only closes the socket.
func closeSocket(cl *client.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cl.Close(ctx)
}

// closeSession closes the session within closeTimeout and what is left of
// ctx. Its error is dropped: the command has been answered already.
func closeSession(ctx context.Context, cl *client.Client) {
	d := closeTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	if ctx.Err() != nil {
		d = 0
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	cl.Close(cctx)
}

// authStatuses are the RMCP+ statuses with which a BMC refuses a login.
var authStatuses = []types.RmcpStatusCode{
	types.RmcpStatusCodeInvalidRole,
	types.RmcpStatusCodeUnauthorizedRoleOfPriLevel,
	types.RmcpStatusCodeInvalidNameLength,
	types.RmcpStatusCodeUnauthorizedName,
}

// Completion codes that refuse the user rather than the command.
const (
	ccPrivilegeNotAvailable types.CompletionCode = 0x81 // Set Session Privilege Level
	ccInsufficientPrivilege types.CompletionCode = 0xd4
)

// classify returns ErrAuth, ErrNoAnswer or nil for any other failure.
//
// go-ipmi (v0.9.1) formats the errors of its session setup with %v, which
// cuts the chain: where errors.Is and errors.As find nothing, the texts
// the library's own error values print are looked for instead.
// TestClassify and the ipmi_sim tests pin both.
func classify(ctx context.Context, connecting bool, err error) error {
	msg := err.Error()
	if errors.Is(err, client.ErrRAKPAuthentication) || strings.Contains(msg, client.ErrRAKPAuthentication.Error()) {
		return ErrAuth
	}
	var st *types.RmcpStatusError
	for _, code := range authStatuses {
		if errors.As(err, &st) && st.StatusCode() == code || strings.Contains(msg, types.NewRmcpStatusError(code).Error()) {
			return ErrAuth
		}
	}
	if resp, ok := types.IsResponseError(err); ok {
		switch cc := resp.CompletionCode(); {
		case cc == ccInsufficientPrivilege, connecting && cc == ccPrivilegeNotAvailable:
			return ErrAuth
		}
	}
	var ne net.Error
	switch {
	case ctx.Err() != nil, deadlinePassed(ctx), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.As(err, &ne) && ne.Timeout(),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		// The library's unexported error for tries that all timed out.
		strings.Contains(msg, "no datagram matched"):
		return ErrNoAnswer
	}
	return nil
}

func deadlinePassed(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// opError is the error of a call: one line that names the BMC and the
// operation, and unwraps to the kind (ErrAuth, ErrNoAnswer) and the cause.
type opError struct {
	addr, op string
	kind     error // nil when neither kind applies
	err      error
}

func newError(ctx context.Context, addr, op string, connecting bool, err error) error {
	// The library cuts its waits short at the context's deadline without
	// saying so, at times a moment before the context notices: say it.
	cerr := ctx.Err()
	if cerr == nil && deadlinePassed(ctx) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return &opError{addr: addr, op: op, kind: classify(ctx, connecting, err), err: err}
}

func (e *opError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bmc %s: %s: ", e.addr, e.op)
	switch e.kind {
	case ErrAuth:
		b.WriteString("authentication failed (wrong user or password, or the user lacks operator privilege): ")
	case ErrNoAnswer:
		b.WriteString("no answer (check the address, the network and that IPMI over LAN is enabled): ")
	}
	// The library's errors span lines (one per cipher suite tried).
	b.WriteString(strings.Join(strings.Fields(e.err.Error()), " "))
	return b.String()
}

func (e *opError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}
