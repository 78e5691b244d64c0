"""Pipeline steps: scene to video (render, translate), labelled data-set export."""
