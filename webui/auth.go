package webui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"
)

// maxLoginBody bounds the login request body.
const maxLoginBody = 4 << 10

// maxCredentialLen bounds user names and passwords so a client cannot make the
// user database hash megabytes.
const maxCredentialLen = 256

// consoleHeader marks requests from the console's own script: a 401 to them
// carries no Basic challenge, which would make the browser pop up its dialog.
const consoleHeader = "X-Dyad-Console"

type credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// formContent is the content type of a browser form post, used by the login
// and logout forms of the console when it runs without JavaScript.
const formContent = "application/x-www-form-urlencoded"

// parseLogin decodes a login body: JSON {"user":..,"password":..} or, from
// the console's form, url-encoded user=..&password=...
func parseLogin(contentType string, body []byte) (credentials, error) {
	var cr credentials
	if isForm(contentType) {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return cr, fmt.Errorf("invalid form body: %w", err)
		}
		cr.User, cr.Password = v.Get("user"), v.Get("password")
	} else {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cr); err != nil {
			return cr, fmt.Errorf("invalid JSON body (want {\"user\":\"...\",\"password\":\"...\"}): %w", err)
		}
		if dec.More() {
			return cr, errors.New("invalid JSON body: trailing data after the object")
		}
	}
	switch {
	case cr.User == "":
		return cr, errors.New(`missing field "user"`)
	case cr.Password == "":
		return cr, errors.New(`missing field "password"`)
	case len(cr.User) > maxCredentialLen || len(cr.Password) > maxCredentialLen:
		return cr, fmt.Errorf("user or password longer than %d bytes", maxCredentialLen)
	}
	return cr, nil
}

func isForm(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == formContent
}

func (s *Server) login(c *gin.Context) {
	r := c.Request
	form := isForm(r.Header.Get("Content-Type"))
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, r.Body, maxLoginBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.loginFailed(c, form, http.StatusRequestEntityTooLarge, fmt.Sprintf("login body larger than %d bytes", maxLoginBody))
			return
		}
		s.loginFailed(c, form, http.StatusBadRequest, "reading login body: "+err.Error())
		return
	}
	cr, err := parseLogin(r.Header.Get("Content-Type"), body)
	if err != nil {
		s.loginFailed(c, form, http.StatusBadRequest, err.Error())
		return
	}
	// From here the audit names the user tried, whether or not the
	// password is right.
	c.Set(auditUserKey, cr.User)
	if err := s.cfg.Users.Authenticate(r.Context(), cr.User, cr.Password); err != nil {
		if errors.Is(err, ErrBadCredentials) {
			s.log.Info("webui: login refused", "user", cr.User, "client", c.ClientIP())
			s.loginFailed(c, form, http.StatusUnauthorized, ErrBadCredentials.Error())
			return
		}
		s.log.Error("webui: checking credentials", "user", cr.User, "err", err)
		s.loginFailed(c, form, http.StatusInternalServerError, "cannot check credentials")
		return
	}
	expires := s.now().Add(sessionTTL)
	http.SetCookie(c.Writer, &http.Cookie{
		Name:     sessionCookie,
		Value:    signSession(s.cfg.SessionKey, cr.User, expires),
		Path:     "/",
		Expires:  expires,
		MaxAge:   int(sessionTTL.Seconds()),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	s.log.Info("webui: login", "user", cr.User, "client", c.ClientIP())
	if form {
		c.Redirect(http.StatusSeeOther, "/")
		return
	}
	c.JSON(http.StatusOK, gin.H{"user": cr.User, "expires": expires.UTC()})
}

// loginFailed answers a failed login: JSON for API clients, back to the login
// page with a reason for the console's plain form.
func (s *Server) loginFailed(c *gin.Context, form bool, status int, msg string) {
	// The form's answer is a redirect, which carries no error to audit.
	c.Set(auditResultKey, msg)
	if form {
		c.Redirect(http.StatusSeeOther, "/login?"+url.Values{"error": {msg}}.Encode())
		c.Abort()
		return
	}
	apiError(c, status, msg)
}

// logout clears the session cookie. Sessions are stateless, so a copied cookie
// stays valid until it expires; logging out only removes it from this browser.
func (s *Server) logout(c *gin.Context) {
	// The audit names the user whose session ends, when there is one.
	if ck, err := c.Request.Cookie(sessionCookie); err == nil {
		if user, err := parseSession(s.cfg.SessionKey, ck.Value, s.now()); err == nil {
			c.Set(auditUserKey, user)
		}
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name:     sessionCookie,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	if isForm(c.Request.Header.Get("Content-Type")) {
		c.Redirect(http.StatusSeeOther, "/login")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "logged out"})
}

// authenticate returns the user of a request from its session cookie or its
// Basic credentials. A bad cookie is ignored when Basic credentials are given.
func (s *Server) authenticate(r *http.Request) (string, error) {
	var cookieErr error
	if ck, err := r.Cookie(sessionCookie); err == nil && ck.Value != "" {
		user, err := parseSession(s.cfg.SessionKey, ck.Value, s.now())
		if err == nil {
			return user, nil
		}
		cookieErr = err
	}
	user, password, ok := r.BasicAuth()
	if !ok {
		if cookieErr != nil {
			return "", fmt.Errorf("%w: %w", ErrBadCredentials, cookieErr)
		}
		return "", fmt.Errorf("%w: not logged in", ErrBadCredentials)
	}
	if user == "" || len(user) > maxCredentialLen || len(password) > maxCredentialLen {
		return "", fmt.Errorf("%w: malformed Basic credentials", ErrBadCredentials)
	}
	if err := s.cfg.Users.Authenticate(r.Context(), user, password); err != nil {
		return "", err
	}
	return user, nil
}

// userKey is where requireAuth leaves the authenticated user in the gin
// context, for handlers that log who asked.
const userKey = "dyad.user"

func (s *Server) requireAuth(c *gin.Context) {
	user, err := s.authenticate(c.Request)
	if err == nil {
		c.Set(userKey, user)
		return
	}
	if !errors.Is(err, ErrBadCredentials) {
		s.log.Error("webui: checking credentials", "err", err)
		apiError(c, http.StatusInternalServerError, "cannot check credentials")
		return
	}
	s.log.Debug("webui: unauthenticated API request", "path", c.Request.URL.Path, "reason", err)
	if c.GetHeader(consoleHeader) == "" {
		c.Header("WWW-Authenticate", `Basic realm="dyad", charset="UTF-8"`)
	}
	apiError(c, http.StatusUnauthorized, "not logged in: log in with POST /api/v1/login or use HTTP Basic auth")
}

// loggedIn reports whether a console page request is authenticated.
func (s *Server) loggedIn(c *gin.Context) (bool, error) {
	_, err := s.authenticate(c.Request)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, ErrBadCredentials) {
		return false, nil
	}
	return false, err
}
