"""The `nets/mobilenet` tree: the generic builder, its blocks, v2 and v3."""
