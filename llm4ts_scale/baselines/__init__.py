"""The floors a forecaster must clear, scored through the same windows and metric code as the model:
naive / seasonal / mean (simple), DLinear (dlinear) and RevIN + ridge on the look-back (rlinear)."""
