package main

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// The demo's own routes on the echo server Myxi is mounted into: the page
// at "/", its assets under "/static/", and a small JSON API that the page's
// buttons and scripts use to change quantities.

//go:embed web
var webFiles embed.FS

var pageTemplate = template.Must(template.ParseFS(webFiles, "web/index.html"))

// nodeInfo is shown in the page's footer, to tell nodes apart.
type nodeInfo struct {
	NodeID string
	Broker string
}

func routes(e *echo.Echo, store *Store, node nodeInfo, log *slog.Logger) {
	static, _ := fs.Sub(webFiles, "web/static")
	e.GET("/", pageHandler(node))
	e.GET("/static/*", echo.WrapHandler(http.StripPrefix("/static/", noCache(http.FileServerFS(static)))))

	api := &api{store: store, log: log}
	e.GET("/api/widgets", api.listWidgets)
	e.POST("/api/widgets/:id", api.changeQuantity)
}

func pageHandler(node nodeInfo) echo.HandlerFunc {
	return func(c echo.Context) error {
		scheme := "ws"
		if c.Scheme() == "https" {
			scheme = "wss"
		}
		c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		return pageTemplate.Execute(c.Response(), map[string]any{
			// The 1.x client connects where the meta tag says: this very
			// host, whose "/" upgrades to Myxi's WebSocket.
			"SocketURL": scheme + "://" + c.Request().Host + "/",
			"Users":     seedUsers,
			"Node":      node,
		})
	}
}

// noCache makes a browser check the assets on every load, so a rebuilt
// demo is picked up at once (they are small; ETags are not worth it here).
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

type api struct {
	store *Store
	log   *slog.Logger
}

// widgetView is a widget as the API shows it to one user: one the user
// may not see is only an id.
type widgetView struct {
	ID         int64  `json:"id"`
	Visible    bool   `json:"visible"`
	Name       string `json:"name,omitempty"`
	Owner      string `json:"owner,omitempty"`
	Visibility string `json:"visibility,omitempty"`
	Quantity   *int   `json:"quantity,omitempty"`
}

func viewOf(w Widget, u User) widgetView {
	if !w.VisibleTo(u) {
		return widgetView{ID: w.ID}
	}
	q := w.Quantity
	return widgetView{ID: w.ID, Visible: true, Name: w.Name, Owner: w.Owner, Visibility: w.Visibility, Quantity: &q}
}

type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// user authenticates an API call by its "Authorization: Bearer <token>",
// the same session tokens the Authenticate action takes. When the token is
// missing or unknown it answers 401 itself and returns ok=false.
func (a *api) user(c echo.Context) (u User, ok bool, err error) {
	token, _ := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
	u, found, err := a.store.UserByToken(c.Request().Context(), strings.TrimSpace(token))
	if err != nil || found {
		return u, found, err
	}
	return User{}, false, c.JSON(http.StatusUnauthorized, apiError{"InvalidSessionToken", "send a demo session token as Authorization: Bearer <token>"})
}

// listWidgets: GET /api/widgets, every widget of the catalogue as the
// caller may see it.
func (a *api) listWidgets(c echo.Context) error {
	u, ok, err := a.user(c)
	if !ok {
		return err
	}
	list, err := a.store.Widgets(c.Request().Context())
	if err != nil {
		return err
	}
	views := make([]widgetView, 0, len(list))
	for _, w := range list {
		views = append(views, viewOf(w, u))
	}
	return c.JSON(http.StatusOK, views)
}

// changeQuantity: POST /api/widgets/:id with {"quantity": N} or
// {"delta": N}. The store's after-save hook pushes WidgetQtyChanged.
func (a *api) changeQuantity(c echo.Context) error {
	u, ok, err := a.user(c)
	if !ok {
		return err
	}
	ctx := c.Request().Context()
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		return c.JSON(http.StatusNotFound, apiError{"NotFound", "no such widget"})
	}
	var body struct {
		Quantity *int `json:"quantity"`
		Delta    *int `json:"delta"`
	}
	if err := c.Bind(&body); err != nil || (body.Quantity == nil) == (body.Delta == nil) {
		return c.JSON(http.StatusBadRequest, apiError{"InvalidPayload", `send {"quantity": N} or {"delta": N}`})
	}
	w, found, err := a.store.Widget(ctx, id)
	if err != nil {
		return err
	}
	// A widget the caller may not see answers as if it did not exist.
	if !found || !w.VisibleTo(u) {
		return c.JSON(http.StatusNotFound, apiError{"NotFound", "no such widget"})
	}
	change := QuantityChange{Set: body.Quantity}
	if body.Delta != nil {
		change.Delta = *body.Delta
	}
	w, err = a.store.ChangeQuantity(ctx, id, change)
	var hookErr *AfterSaveError
	switch {
	case errors.Is(err, ErrNegativeQuantity):
		return c.JSON(http.StatusUnprocessableEntity, apiError{"NegativeQuantity", err.Error()})
	case errors.Is(err, ErrNotFound):
		return c.JSON(http.StatusNotFound, apiError{"NotFound", "no such widget"})
	case errors.As(err, &hookErr):
		// Saved, but the subscribers were not told: say so rather than
		// pretend the live update went out.
		a.log.Error("quantity saved but not pushed", "widget", id, "err", hookErr.Err)
		return c.JSON(http.StatusBadGateway, apiError{"PushFailed", "the quantity was saved but the live update could not be sent"})
	case err != nil:
		return err
	}
	a.log.Info("quantity changed", "widget", id, "quantity", w.Quantity, "by", u.Username)
	return c.JSON(http.StatusOK, viewOf(w, u))
}
