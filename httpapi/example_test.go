package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/myxi/myxi"
	"github.com/myxi/myxi/httpapi"
)

// Serving the publish API next to a Myxi server, then publishing as an
// application in any language would (here with Go's HTTP client; with
// curl it is `curl -H "Authorization: Bearer $MYXI_API_KEY" -d '{...}'
// http://localhost:5005/api/publish`).
func ExampleNew() {
	srv, err := myxi.New(myxi.Config{
		Exchanges: map[string]myxi.AuthorizeFunc{"widgets": myxi.AllowAll},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown(context.Background())

	api, err := httpapi.New(httpapi.Config{Pusher: srv, Keys: []string{"s3cret"}, Exchanges: []string{"widgets"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api)
	mux.Handle("/", srv.Handler())
	web := httptest.NewServer(mux)
	defer web.Close()

	publish := func(key, body string) {
		req, _ := http.NewRequest(http.MethodPost, web.URL+"/api/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		fmt.Print(resp.StatusCode, " ", string(answer))
	}
	publish("s3cret", `{"exchange": "widgets", "routing_key": "42", "event": "WidgetQtyChanged", "payload": {"quantity": 5}}`)
	publish("guess", `{"exchange": "widgets", "routing_key": "42", "event": "WidgetQtyChanged"}`)
	publish("s3cret", `{"exchange": "widgets", "routingKey": "42", "event": "WidgetQtyChanged"}`)
	// Output:
	// 200 {"published":1}
	// 401 {"error":"Unauthorized","message":"missing or wrong API key: send \"Authorization: Bearer <key>\""}
	// 400 {"error":"InvalidJSON","message":"body: unknown field \"routingKey\""}
}
