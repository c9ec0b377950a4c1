package main

// The demo's users and widgets, inserted when missing. The README's table
// of who may see what follows from these rows: public widgets are seen by
// everyone signed in, private ones by their owner and whom they are
// shared with.

type seedUser struct {
	User
	Token string
}

var seedUsers = []seedUser{
	{User{ID: 1, Username: "alice", Name: "Alice Archer"}, "alice-token"},
	{User{ID: 2, Username: "bob", Name: "Bob Baker"}, "bob-token"},
	{User{ID: 3, Username: "carol", Name: "Carol Chen"}, "carol-token"},
}

var seedWidgets = []Widget{
	{ID: 1, Name: "Blue sprocket", OwnerID: 1, Visibility: "public", Quantity: 12},
	{ID: 2, Name: "Brass gear", OwnerID: 1, Visibility: "private", Quantity: 7},
	{ID: 3, Name: "Flux capacitor", OwnerID: 2, Visibility: "public", Quantity: 3},
	{ID: 4, Name: "Hover board", OwnerID: 2, Visibility: "private", Quantity: 5},
	{ID: 5, Name: "Pocket gizmo", OwnerID: 3, Visibility: "private", Quantity: 20, SharedWith: []int64{1}},
	{ID: 6, Name: "Doohickey", OwnerID: 3, Visibility: "private", Quantity: 9},
}
