package rabbitmq_test

import (
	"context"
	"fmt"
	"time"

	"github.com/myxi/myxi/broker/rabbitmq"
)

// A process that is not a socket server pushes through RabbitMQ with a
// Publisher, exactly as myxi 1.x's Myxi.push_event did.
func ExampleNewPublisher() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pub, err := rabbitmq.NewPublisher(ctx, rabbitmq.PublisherConfig{URLs: []string{"amqp://guest:guest@127.0.0.1:5672/"}})
	if err != nil {
		fmt.Println("no RabbitMQ:", err)
		return
	}
	defer pub.Close()
	err = pub.Push(ctx, "widgets", "42", "WidgetQtyChanged", map[string]int{"quantity": 5})
	fmt.Println(err)
}
