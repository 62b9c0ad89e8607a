-- Argo CD health of a Tessera Microservice or CitusCluster, from the kstatus conditions the
-- operator writes (Ready, Reconciling, Stalled, each with observedGeneration; CitusClusters also
-- report Degraded). Install: see charts/tessera/argocd/README.md.
local hs = {}
local generation = obj.metadata and obj.metadata.generation
local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local ready = conditions["Ready"]
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tessera operator to report"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tessera operator to see generation " .. tostring(generation)
  return hs
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
if ready.status == "True" then
  local degraded = conditions["Degraded"]
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = degraded.message or degraded.reason or "Degraded"
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
hs.status = "Progressing"
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= nil then
  hs.message = reconciling.message
else
  hs.message = ready.message or ready.reason or "Not ready"
end
return hs
