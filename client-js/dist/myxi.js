// placeholder: replaced by go generate
