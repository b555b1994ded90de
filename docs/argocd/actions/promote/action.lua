-- ModelRollout action promote: end a pause or a manual approval and go on to the next stage.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "promote"
return obj
