"""Rendering: vision heatmap figures (:mod:`.images`) and token heatmaps in HTML and PNG (:mod:`.text`)."""
