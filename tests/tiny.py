"""The tiny UniAS settings the tests train and export: Lite0 (bundled weights), 64 x 64, narrow widths."""

TINY_UNIAS = {
    "backbone": "tf_efficientnet_lite0",
    "input_size": (64, 64),
    "pixel_dim": 32,
    "hidden_dim": 32,
    "ffn_dim": 64,
    "num_encoder_layers": 1,
    "neighbour_size": 3,
}
